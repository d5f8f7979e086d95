"""The vision demo's outputs: ``table.md``, ``table.json``, the pictures and ``report.html``.

Scores are means over test images of per-image mIoU; each has a 95% percentile-bootstrap
interval over the test images (the average's interval resamples every task's images together),
computed by :func:`cycleqd.report.stats.bootstrap_average`, seeded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cycleqd.report.stats import bootstrap_average, paired_comparison
from cycleqd.report.tables import markdown_table
from cycleqd.vision.presets import VARIANT, VARIANT_LABEL, VisionPreset

if TYPE_CHECKING:
    from cycleqd.vision.scenes import SceneSet


@dataclass(frozen=True)
class ReportContext:
    """What the report reads of the demo that ran: where it writes, its sizes, its timings."""

    out: Path
    p: VisionPreset
    tasks: Sequence[str]
    timings: Mapping[str, float]


def _final(summary: Mapping[str, Any]) -> dict[str, Any]:
    final = summary.get("final") or {}
    return {k: final.get(k) for k in ("elites", "merge", "chosen", "scores", "beta")}


def table_row(name: str, per_image: Mapping[str, Sequence[float]], *, seed: int) -> dict[str, Any]:
    """A row: mean mIoU per task, bootstrap intervals, and the per-image scores behind them."""
    scores = {t: float(sum(v) / len(v)) for t, v in per_image.items()}
    return {
        "name": name,
        "scores": scores,
        "average": sum(scores.values()) / len(scores),
        "intervals": {
            t: list(bootstrap_average({t: list(v)}, seed=seed)) for t, v in per_image.items()
        },
        "average_interval": list(
            bootstrap_average({t: list(v) for t, v in per_image.items()}, seed=seed)
        ),
        "samples": {t: list(v) for t, v in per_image.items()},
    }


def paired(rows: Sequence[Mapping[str, Any]], a: str, b: str, *, seed: int) -> dict[str, Any]:
    """``a`` minus ``b`` on the same test images: difference of averages, paired bootstrap."""
    ra = next(r for r in rows if r["name"] == a)
    rb = next(r for r in rows if r["name"] == b)

    def ids(row: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        return {t: dict(enumerate(v)) for t, v in row["samples"].items()}

    c = paired_comparison(ids(ra), ids(rb), seed=seed)
    return {"a": a, "b": b, "difference": c["difference"], "interval": c["interval"]}


def similarity_rows(
    demo: ReportContext,
    pair_scores: Mapping[tuple[str, str, str], Mapping[str, float]],
    rows: Sequence[Mapping[str, Any]],
    experts: Mapping[str, Path],
    base: Path,
    general: SceneSet,
) -> list[dict[str, Any]]:
    """One row per pair of tasks: both similarity measures and each pair merge's retention."""
    from cycleqd.vision.model import load_model
    from cycleqd.vision.scenes import task_rule
    from cycleqd.vision.similarity import label_iou, pairs, retention, task_vector_cosine

    base_sd = load_model(base).state_dict()
    expert_sd = {t: load_model(p).state_dict() for t, p in experts.items()}
    expert_scores = {
        t: next(r for r in rows if r["name"] == f"expert: {t}")["scores"][t] for t in experts
    }
    base_scores = next(r for r in rows if r["name"] == "base")["scores"]
    out = []
    for a, b in pairs(list(experts)):
        row: dict[str, Any] = {
            "pair": f"{a}+{b}",
            "same_kind": task_rule(a).kind == task_rule(b).kind,
            "label_iou": label_iou(general, a, b),
            "cosine": task_vector_cosine(base_sd, expert_sd[a], expert_sd[b]),
        }
        for m in demo.p.pair_methods:
            merged = pair_scores[(a, b, m)]
            kept = retention(merged, expert_scores, base_scores)
            row[f"{m}_miou"] = dict(merged)
            row[f"{m}_retention"] = kept["retention"]
            row[f"{m}_gain_kept"] = kept["gain_kept"]
        out.append(row)
    return out


def similarity_summary(sim: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict:
    from cycleqd.vision.similarity import rank_correlation

    summary: dict[str, Any] = {}
    for m in methods:
        for key in ("label_iou", "cosine"):
            for target in ("retention", "gain_kept"):
                xs = [float(r[key]) for r in sim]
                ys = [float(r[f"{m}_{target}"]) for r in sim]
                summary[f"spearman({key}, {m}_{target})"] = rank_correlation(xs, ys)
        for same, label in ((True, "same kind"), (False, "different kind")):
            group = [float(r[f"{m}_retention"]) for r in sim if r["same_kind"] == same]
            if group:
                summary[f"{m}_retention mean, {label}"] = sum(group) / len(group)
    return summary


def similarity_markdown(sim: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[str]:
    head = "| pair | same kind | label IoU | task-vector cosine |"
    head += "".join(f" {m}: mIoU kept | {m}: gain kept |" for m in methods)
    lines = [head, "|---" * (4 + 2 * len(methods)) + "|"]
    for r in sim:
        cells = "".join(
            f" {r[f'{m}_retention']:.3f} | {r[f'{m}_gain_kept']:.3f} |" for m in methods
        )
        kind = "yes" if r["same_kind"] else "no"
        lines.append(f"| {r['pair']} | {kind} | {r['label_iou']:.3f} | {r['cosine']:.3f} |{cells}")
    return lines


def masks_picture(
    demo: ReportContext, models: Sequence[tuple[str, Path]], test: Mapping[str, SceneSet]
) -> Path:
    """The first ``shown`` test images of every task, and each model's predicted masks."""
    from cycleqd.vision.figures import masks_figure, save_png
    from cycleqd.vision.metrics import per_image_miou
    from cycleqd.vision.model import SegmentationEngine, load_model

    idx = list(range(demo.p.shown))
    columns = [t for t in test for _ in idx]
    images = torch.cat([test[t].images[idx] for t in test])
    truths = torch.cat([test[t].targets(t)[idx] for t in test])
    preds, scores = {}, {}
    for name, path in models:
        engine = SegmentationEngine(load_model(path))
        preds[name] = engine.predict(images)
        scores[name] = per_image_miou(preds[name], truths).tolist()
    fig = masks_figure(columns, images, truths, preds, scores)
    return save_png(fig, demo.out / "figures" / "masks.png")


def write_outputs(
    demo: ReportContext,
    *,
    rows: list[dict[str, Any]],
    models: Sequence[tuple[str, Path]],
    pair_scores: Mapping[tuple[str, str, str], Mapping[str, float]],
    experts: Mapping[str, Path],
    base: Path,
    data: Mapping[str, Mapping[str, SceneSet]],
    run_dir: Path,
    summary: Mapping[str, Any],
    variant_summary: Mapping[str, Any] | None = None,
) -> None:
    from cycleqd.report.html import write_report
    from cycleqd.vision.figures import save_png, similarity_figure

    p, tasks = demo.p, demo.tasks
    sim = similarity_rows(demo, pair_scores, rows, experts, base, data["general"]["objects"])
    correlations = similarity_summary(sim, p.pair_methods)
    merges = [r for r in rows if r["name"].startswith("merge: ")]
    best_merge = max(merges, key=lambda r: r["average"])["name"]
    others = [r for r in rows if not r["name"].startswith("CycleQD")]
    best_other = max(others, key=lambda r: r["average"])["name"]
    comparisons = []
    for ours in (r["name"] for r in rows if r["name"].startswith("CycleQD")):
        comparisons.append(paired(rows, ours, best_merge, seed=p.seed))
        if best_other != best_merge:
            comparisons.append(paired(rows, ours, best_other, seed=p.seed))
    public = [{k: v for k, v in r.items() if k != "samples"} for r in rows]
    table = {
        "track": "vision",
        "preset": p.name,
        "tasks": tasks,
        "metric": "mean over test images of per-image mIoU (torchmetrics mean_iou, 2 classes)",
        "n_test": p.n_test,
        "image_size": p.image_size,
        "test": public,
        "paired": comparisons,
        "similarity": {"pairs": sim, "rank_correlations": correlations},
        "timings_s": demo.timings,
        "cycleqd": {
            "generations": summary["generations_done"],
            "expert_scores_validation": summary["expert_scores"],
            "best_quality_validation": summary["best_quality"],
            "final": _final(summary),
        },
    }
    if variant_summary is not None:
        table["cycleqd_variant"] = {
            "operators": dict(VARIANT),
            "generations": variant_summary["generations_done"],
            "final": _final(variant_summary),
        }
    (demo.out / "table.json").write_text(json.dumps(table, indent=2))
    notes = [
        f"{c['a']} minus {c['b']} on the same test images: average mIoU {c['difference']:+.3f} "
        f"(95% paired-bootstrap interval {c['interval'][0]:+.3f} to {c['interval'][1]:+.3f})."
        for c in comparisons
    ]
    for label, summ in (("CycleQD", summary), (VARIANT_LABEL, variant_summary)):
        if summ is None:
            continue
        f = summ.get("final") or {}
        notes.append(
            f"{label}'s final model: the {f.get('merge')} merge of the archives' best elites "
            f"({', '.join(f.get('elites') or [])}); chosen: {f.get('chosen')} (selected on "
            "validation scenes only)."
        )
    corr_text = ", ".join(
        f"{k} = {'n/a' if v is None else (f'{v:+.2f}' if k.startswith('spearman') else f'{v:.3f}')}"
        for k, v in correlations.items()
    )
    notes.append(
        f"Over the {len(sim)} pairs (same kind: both tasks select by shape, or both by colour): "
        f"{corr_text}."
    )
    md = [
        f"Test scenes ({p.n_test} per task, {p.image_size}x{p.image_size} px, preset `{p.name}`); "
        "mean per-image mIoU (torchmetrics), 95% bootstrap intervals over test images:",
        "",
        *markdown_table(rows, tasks, digits=3),
        "",
        *notes[:-1],
        "",
        "Pairwise merges of two experts (test mIoU kept = mean over the pair's two tasks of "
        "merge / expert; gain kept = mean of (merge - base) / (expert - base)); label IoU = "
        "Jaccard index of the two tasks' target maps on the same general scenes; cosine = of the "
        "two experts' task vectors:",
        "",
        *similarity_markdown(sim, p.pair_methods),
        "",
        notes[-1],
        "",
        "Stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in demo.timings.items()),
    ]
    (demo.out / "table.md").write_text("\n".join(md) + "\n")
    masks = masks_picture(demo, models, data["test"])
    sim_png = save_png(
        similarity_figure(sim, p.pair_methods[0]), demo.out / "figures" / "similarity.png"
    )
    images = [("predicted masks on test images (mIoU per image in the corner)", masks)]
    images.append(("pairwise merges by task similarity", sim_png))
    images += [
        (f"elite map: {png.stem.removeprefix('archive_')}", png)
        for png in sorted((run_dir / "plots").glob("archive_*.png"))
    ]
    images.append(("quality over generations", run_dir / "plots" / "progress.png"))
    sim_table = [
        {
            "name": r["pair"],
            "scores": {
                "label IoU": r["label_iou"],
                "task-vector cosine": r["cosine"],
                **{f"{m}: gain kept": r[f"{m}_gain_kept"] for m in p.pair_methods},
            },
            "average": r[f"{p.pair_methods[0]}_retention"],
        }
        for r in sim
    ]
    write_report(
        demo.out / "report.html",
        title="cycleqd vision demo",
        intro=(
            "CycleQD merges of four Segformer segmentation experts (circles, squares, red "
            "objects, red-or-yellow objects), fine-tuned from one base trained to segment every "
            "object, against the base, the experts and mergekit's linear and TIES merges. "
            "Selection used validation scenes only; scores are mean per-image mIoU on held-out "
            "test scenes. In the pairwise table the last column ('average') is the pair's "
            f"{p.pair_methods[0]} merge's mIoU kept (merge / expert, mean over the two tasks)."
        ),
        tables=[
            ("Test scenes (mIoU)", public, tasks),
            ("Pairwise merges and task similarity", sim_table, list(sim_table[0]["scores"])),
        ],
        images=images,
        timings=demo.timings,
        notes=notes,
    )
