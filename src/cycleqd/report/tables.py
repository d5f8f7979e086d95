"""Result tables shared by the demo's tracks: markdown with intervals, spread over runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    *,
    validation: bool = False,
    after: Sequence[str] | None = None,
    digits: int = 2,
) -> list[str]:
    """A table of scores with intervals; ``validation`` adds the final model's validation mean
    (what the ablation's variants were selected on); ``after``: score columns shown after the
    average and not part of it (the language column); ``digits``: of the intervals' bounds."""
    after = list(after or [])
    best = round(max(r["average"] for r in rows), 9)  # ties in value tie in print too

    def cell(value: float, interval: list[float] | None, bold: bool = False) -> str:
        text = f"**{value:.3f}**" if bold else f"{value:.3f}"
        return f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else text

    extra = "".join(f" {t} |" for t in after) + (" validation average |" if validation else "")
    lines = [
        "| model | " + " | ".join(tasks) + " | average |" + extra,
        "|---" * (len(tasks) + 2 + len(after) + int(validation)) + "|",
    ]
    for r in rows:
        intervals = r.get("intervals") or {}

        def cells(names: Sequence[str], r: Mapping[str, Any] = r, iv: Mapping = intervals) -> str:
            return " | ".join(
                cell(r["scores"][t], iv.get(t)) if t in r["scores"] else "-" for t in names
            )

        avg = cell(r["average"], r.get("average_interval"), round(r["average"], 9) == best)
        tail = "".join(f" {cells([t])} |" for t in after)
        if validation:
            v = r.get("validation_average")
            tail += f" {v:.3f} |" if v is not None else " - |"
        lines.append(f"| {r['name']} | {cells(tasks)} | {avg} |{tail}")
    return lines


def spread(averages: list[float]) -> dict[str, Any]:
    """Count, mean, sample standard deviation and range of several runs' test averages."""
    mean = sum(averages) / len(averages)
    std = (sum((a - mean) ** 2 for a in averages) / (len(averages) - 1)) ** 0.5
    return {
        "runs": len(averages),
        "average_mean": mean,
        "average_std": std,
        "average_min": min(averages),
        "average_max": max(averages),
    }
