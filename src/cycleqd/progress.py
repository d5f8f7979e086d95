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


def bar_columns(description_style: str = "") -> tuple[ProgressColumn, ...]:
    """Description, bar, done/total, the task's ``info`` field, elapsed time and ETA.

    Both texts hold values we do not control (task names, tensor names), so they are printed
    without markup: rich would take ``[copy]`` in ``generation 3 [copy]`` for a style tag and drop
    it. ``description_style`` styles the description instead.
    """
    return (
        TextColumn("{task.description}", style=description_style, markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
