"""The demo's table rows and notes: scores with intervals, paired comparisons, spreads.

Pure functions of the evaluations' reports and the searches' summaries, so the numbers behind
``table.json`` and ``table.md`` can be recomputed and tested without running a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cycleqd.demo.baselines import SEED_SUFFIX
from cycleqd.demo.skills import LANGUAGE, SKILLS
from cycleqd.report.stats import bootstrap_average, paired_comparison, wilson
from cycleqd.report.tables import spread


def samples_of(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per task, every scored sample's score by sample id (unsupported samples left out)."""
    out: dict[str, dict[str, float]] = {}
    for task, r in report["tasks"].items():
        path = Path(r["transcripts"])
        records = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        out[task] = {
            str(x["sample_id"] if "sample_id" in x else x["id"]): float(x.get("score", 0.0))
            for x in records
            if not x.get("unsupported")
        }
    return out


def table_row(name: str, report: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """A table row: scores, their 95% intervals, and the per-sample scores behind them.

    The average, its interval and ``samples`` (what paired comparisons use) cover the agent
    tasks only; the language column's per-question scores are kept apart in
    ``language_samples``.
    """

    scores = {t: r["quality"] for t, r in report["tasks"].items()}
    every = samples_of(report)
    intervals = {t: list(wilson(sum(s.values()), len(s))) for t, s in every.items() if len(s) > 0}
    samples = {t: s for t, s in every.items() if t != LANGUAGE}
    agent = [q for t, q in scores.items() if t != LANGUAGE]
    row: dict[str, Any] = {
        "name": name,
        "scores": scores,
        "average": sum(agent) / len(agent),
        "intervals": intervals,
        "samples": samples,
    }
    if LANGUAGE in every:
        row["language_samples"] = every[LANGUAGE]
    if samples and all(samples.values()):
        row["average_interval"] = list(
            bootstrap_average({t: list(s.values()) for t, s in samples.items()}, seed=seed)
        )
    return row


ABLATION_INTRO = (
    "Ablation: CycleQD with the paper's operators, then with each of the preset's changes alone "
    "(same experts, sizes, seed and test samples; validation average of each final model, "
    "which is all the search saw)"
)


def validation_of(summary: dict[str, Any]) -> dict[str, Any]:
    scores = (summary.get("final") or {}).get("scores") or {}
    return {"validation_average": sum(scores.values()) / len(scores) if scores else None}


def ablation_row(
    label: str, report: dict[str, Any], summary: dict[str, Any], *, seed: int
) -> dict[str, Any]:
    return {**table_row(label, report, seed=seed), **validation_of(summary)}


def public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("samples", "language_samples")} for r in rows]


def language_summary(rows: list[dict[str, Any]], *, seed: int) -> dict[str, Any] | None:
    """How much language ability CycleQD and the best merge (by agent average) lost from the
    base, and the two paired on the same questions (the target: CycleQD's drop is no larger)."""

    named = {r["name"]: r for r in rows if LANGUAGE in r["scores"]}
    base, ours = named.get("base"), named.get("CycleQD")
    merges = [r for r in named.values() if is_merge(r["name"])]
    if base is None or ours is None:
        return None
    out: dict[str, Any] = {
        "base": base["scores"][LANGUAGE],
        "drop": {n: base["scores"][LANGUAGE] - r["scores"][LANGUAGE] for n, r in named.items()},
    }
    if merges:
        best = max(merges, key=lambda r: r["average"])
        paired = paired_comparison(
            {LANGUAGE: ours["language_samples"]}, {LANGUAGE: best["language_samples"]}, seed=seed
        )
        out |= {
            "best_merge": best["name"],
            "cycleqd_minus_best_merge": paired,
            "cycleqd_drop_no_larger": out["drop"]["CycleQD"] <= out["drop"][best["name"]],
        }
    return out


def language_text(s: dict[str, Any], benchmark: str = "") -> str:
    """The language column in words, as signed changes from the base (a merge can also gain: a
    "drop" of -0.020 read as a loss)."""
    named = f"{benchmark} " if benchmark else ""
    ours = -s["drop"]["CycleQD"]
    text = (
        f"Language ({named}acc_norm): base {s['base']:.3f}; CycleQD's change from the base "
        f"{ours:+.3f}"
    )
    if "best_merge" in s:
        c = s["cycleqd_minus_best_merge"]
        lo, hi = c["interval"]
        verdict = "not below" if s["cycleqd_drop_no_larger"] else "below"
        text += (
            f", {verdict} the best merge's ({s['best_merge']}, "
            f"{-s['drop'][s['best_merge']]:+.3f}); paired on the same questions, CycleQD minus "
            f"it: {c['difference']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}, exact McNemar "
            f"p = {c['mcnemar_p']:.3f})"
        )
    return text + "."


def comparisons(rows: list[dict[str, Any]], *, seed: int) -> list[dict[str, Any]]:
    """CycleQD against the best other model and the best merge, paired on the test samples."""

    ours = next((r for r in rows if r["name"] == "CycleQD"), None)
    others = [r for r in rows if not SEED_SUFFIX.search(r["name"]) and r["name"] != "CycleQD"]
    if ours is None or not others:
        return []
    picks = [max(others, key=lambda r: r["average"])]
    merges = [r for r in others if is_merge(r["name"])]
    if merges and max(merges, key=lambda r: r["average"]) is not picks[0]:
        picks.append(max(merges, key=lambda r: r["average"]))
    return [
        {
            "a": "CycleQD",
            "b": r["name"],
            **paired_comparison(ours["samples"], r["samples"], seed=seed),
        }
        for r in picks
    ]


def comparison_text(c: dict[str, Any]) -> str:
    lo, hi = c["interval"]
    return (
        f"Paired on the same test samples, {c['a']} minus {c['b']}: average "
        f"{c['difference']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}); samples only "
        f"{c['a']} passed: {c['only_a_passed']}, only {c['b']} passed: {c['only_b_passed']} "
        f"(exact McNemar p = {c['mcnemar_p']:.3f})."
    )


def seed_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean and spread of CycleQD's test scores over the searches' seeds (None with one seed)."""
    runs = [r for r in rows if r["name"].startswith("CycleQD")]
    if len(runs) < 2:
        return None
    tasks = list(runs[0]["scores"])
    return {
        **spread([r["average"] for r in runs]),
        "per_task_mean": {t: sum(r["scores"][t] for r in runs) / len(runs) for t in tasks},
    }


def is_merge(name: str) -> bool:
    """A merge baseline's row drawn with the preset's seed (the rows CycleQD is paired with;
    the other seeds' draws are summarised by :func:`_merge_seed_summary`)."""
    return name.startswith("merge: ") and not SEED_SUFFIX.search(name)


def merge_seed_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of each random merge's test average over its seeds (empty with one)."""
    draws: dict[str, list[float]] = {}
    for r in rows:
        if r["name"].startswith("merge: "):
            draws.setdefault(SEED_SUFFIX.sub("", r["name"]), []).append(r["average"])
    return {name: spread(averages) for name, averages in draws.items() if len(averages) > 1}


def merge_seeds_text(name: str, s: dict[str, Any]) -> str:
    return (
        f"{name} over {s['runs']} drop seeds: test average {s['average_mean']:.3f} "
        f"(sd {s['average_std']:.3f}, min {s['average_min']:.3f}, max {s['average_max']:.3f})."
    )


def seeds_text(s: dict[str, Any]) -> str:
    return (
        f"CycleQD over {s['runs']} search seeds: test average {s['average_mean']:.3f} "
        f"(sd {s['average_std']:.3f}, min {s['average_min']:.3f}, max {s['average_max']:.3f})."
    )


def final_model(summary: dict[str, Any]) -> dict[str, Any]:
    """What the CycleQD row is: the final merge or an archived individual, and why."""
    final = summary.get("final") or {}
    return {
        "merge": final.get("merge", "softmax"),
        "elites": final.get("elites"),
        "chosen": final.get("chosen"),
        "merge_validation": final.get("merge_scores"),
        "validation": final.get("scores"),
    }


def final_model_text(final: dict[str, Any]) -> str:
    def mean(scores: dict[str, float] | None) -> str:
        if not scores:
            return "n/a"
        agent = [scores[t] for t in SKILLS if t in scores]  # a constraint's score is no skill
        return f"{sum(agent) / len(agent):.3f}"

    elites = ", ".join(final["elites"] or [])
    merge = f"the {final['merge']} merge of the archives' best elites ({elites})"
    if final["chosen"] in (None, "merge"):
        what = merge
    else:
        what = f"archived individual {final['chosen']}, whose validation average beat {merge}"
        what += f" ({mean(final['validation'])} vs {mean(final['merge_validation'])})"
    return f"CycleQD's final model is {what}; chosen on validation, never on test."


def constraint_text(summary: dict[str, Any], n_questions: int) -> str:
    """What the searches' language constraint did, for the table's notes."""
    c = summary["constraints"][LANGUAGE]
    below = ", ".join(c["experts_below"]) or "none"
    return (
        f"The search kept only children whose {LANGUAGE} score (acc_norm on {n_questions} "
        f"validation questions apart from the column's) stayed at or above {c['floor']:.3f} "
        f"(the base's {c['base']:.3f} minus the allowed drop); it rejected "
        f"{summary.get('rejected', 0)} of {summary['generations_done']} children. Experts below "
        f"that floor (they still seed the archives): {below}."
    )
