"""The demo's outputs: ``table.json``, ``table.md`` and the self-contained ``report.html``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cycleqd.demo.presets import Preset
from cycleqd.demo.skills import LANGUAGE, SKILLS
from cycleqd.demo.tables import (
    ABLATION_INTRO,
    comparison_text,
    comparisons,
    constraint_text,
    final_model,
    final_model_text,
    language_summary,
    language_text,
    merge_seed_summary,
    merge_seeds_text,
    public,
    seed_summary,
    seeds_text,
)
from cycleqd.report.html import write_report
from cycleqd.report.tables import markdown_table


def write_outputs(
    out: Path,
    preset: Preset,
    timings: dict[str, float],
    rows: list[dict[str, Any]],
    real_rows: list[dict[str, Any]],
    run_dir: Path,
    summary: dict[str, Any],
    ablation_rows: list[dict[str, Any]] | None = None,
    *,
    peaks_gb: dict[str, float] | None = None,
    engine: str = "hf",
    language_name: str = "",
) -> None:
    """Write the test table (``rows``), the real benchmarks' rows, the ablation and the notes
    on them to ``out``: ``table.json`` (everything, per-sample scores left out), ``table.md``
    and ``report.html`` (with ``run_dir``'s elite maps and CycleQD's first test transcripts)."""
    tasks = list(SKILLS)
    after = [LANGUAGE] if any(LANGUAGE in r["scores"] for r in rows) else []
    paired = comparisons(rows, seed=preset.seed)
    seeds = seed_summary(rows)
    language = language_summary(rows, seed=preset.seed) if after else None
    rows, real_rows = public(rows), public(real_rows)
    ablation = public(ablation_rows or [])
    table = {
        "preset": preset.name,
        "engine": engine,
        "language_benchmark": language_name or None,
        "tasks": tasks,
        "n_test": preset.n_test,
        "test": rows,
        "real_dev": real_rows,
        "paired": paired,
        "seeds": seeds,
        "merge_seeds": merge_seed_summary(rows),
        "ablation": ablation,
        "language": language,
        "timings_s": timings,
        "peak_rss_gb": peaks_gb or {},
        "cycleqd": {
            "generations": summary["generations_done"],
            "expert_scores_validation": summary["expert_scores"],
            "best_quality_validation": summary["best_quality"],
            "final_validation": (summary.get("final") or {}).get("scores"),
            "final_model": final_model(summary),
            "constraints": summary.get("constraints"),
            "rejected_children": summary.get("rejected"),
        },
    }
    (out / "table.json").write_text(json.dumps(table, indent=2))
    md = [
        f"Test splits ({preset.n_test} samples per task, preset `{preset.name}`, engine "
        f"`{engine}`; "
        "95% intervals: Wilson per task, bootstrap for the average of the three agent tasks"
        + (
            f"; {LANGUAGE}: {preset.n_language} questions of {language_name or 'its file'}, "
            "acc_norm, not averaged"
        )
        * bool(after)
        + "):",
        "",
    ]
    md += markdown_table(rows, tasks, after=after)
    notes = [comparison_text(c) for c in paired] + ([seeds_text(seeds)] if seeds else [])
    notes += [merge_seeds_text(n, m) for n, m in table["merge_seeds"].items()]
    if language:
        notes.append(language_text(language, language_name))
    notes.append(final_model_text(table["cycleqd"]["final_model"]))
    if summary.get("constraints"):
        notes.append(constraint_text(summary, preset.n_language_search))
    if notes:
        md += ["", *notes]
    if ablation:
        md += ["", ABLATION_INTRO, ""]
        md += markdown_table(ablation, tasks, validation=True)
    if real_rows:
        md += ["", "Real benchmarks' development data:", ""]
        md += markdown_table(real_rows, [t for t in tasks if t in real_rows[0]["scores"]])
    (out / "table.md").write_text("\n".join(md) + "\n")
    images = [
        (f"elite map: {p.stem.removeprefix('archive_')}", p)
        for p in sorted((run_dir / "plots").glob("archive_*.png"))
    ]
    images.append(("quality over generations", run_dir / "plots" / "progress.png"))
    transcripts: dict[str, list[dict[str, Any]]] = {}
    results = out / "test" / "cycleqd"
    for skill in tasks:
        path = results / f"results.{skill}.jsonl"
        if path.is_file():
            lines = path.read_text().splitlines()[:3]
            transcripts[f"CycleQD on {skill} (test)"] = [json.loads(x) for x in lines]
    write_report(
        out / "report.html",
        title="cycleqd demo",
        intro=(
            "CycleQD merges of three skill experts (code, OS, database) of one instruct model, "
            "against the base, the experts, merge baselines and an all-data fine-tune. "
            "Selection used the validation splits only; scores are on held-out test splits."
        ),
        tables=[("Test splits", rows, tasks, after)]
        + (
            [("Ablation (test splits; " + ABLATION_INTRO + ")", ablation, tasks)]
            if ablation
            else []
        )
        + ([("Real benchmarks' development data", real_rows, tasks)] if real_rows else []),
        images=images,
        timings=timings,
        peaks_gb=peaks_gb,
        transcripts=transcripts,
        notes=notes,
    )
