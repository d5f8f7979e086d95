"""The columns of every long-running bar (search, expert training): one look, with an ETA."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def bar_columns(description: str = "{task.description}") -> tuple[ProgressColumn, ...]:
    """Description, bar, done/total, the task's ``info`` field, elapsed time and ETA."""
    return (
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
