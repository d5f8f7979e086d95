"""Progress of every long stage (search, expert training, the demo's stages): one mechanism.

In a terminal, rich's live bars. Elsewhere (output to a file, a CI log, ``nohup``) a live bar
draws nothing until it ends, so a 40-minute stage would look hung: there the same tasks are
reported as plain lines, one whenever a task changes what it is doing or finishes, and one for
every running task at least every ``heartbeat`` seconds, each with its count, elapsed time and
ETA. Callers use rich's task API (``add_task``, ``update``) either way.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HEARTBEAT_S = 30.0
"""Seconds between plain progress lines of a running task (the log never goes a minute quiet)."""

SPEED_WINDOW_S = 600.0
"""The ETA's speed is measured over this window: a child or a training step can take minutes,
and rich's default (30 s) would then hold too few samples to estimate anything."""


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


def progress_bar(
    console: Console | None = None,
    *,
    description_style: str = "",
    heartbeat: float = HEARTBEAT_S,
) -> Progress:
    """Live bars on a terminal console, :class:`PlainProgress` lines on any other.

    Tasks should carry an ``info`` field (``add_task(..., info="")``): the bars show it.
    """
    console = console or Console(markup=False)
    if console.is_terminal:
        return Progress(
            *bar_columns(description_style),
            console=console,
            speed_estimate_period=SPEED_WINDOW_S,
        )
    return PlainProgress(console=console, heartbeat=heartbeat)


class PlainProgress(Progress):
    """Rich's task bookkeeping (counts, speeds, ETA) with plain lines instead of a live display.

    A line is printed when a task's description changes or it finishes, and for every running
    task each ``heartbeat`` seconds from a background thread, so progress shows even while one
    step (a child's evaluation, a training step) takes minutes.
    """

    def __init__(self, *, console: Console, heartbeat: float = HEARTBEAT_S) -> None:
        super().__init__(console=console, disable=True, speed_estimate_period=SPEED_WINDOW_S)
        self.heartbeat = heartbeat
        self._said: dict[TaskID, tuple[str, bool]] = {}
        self._quit = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> None:
        super().start()
        if self._beat is None:
            self._quit.clear()
            self._beat = threading.Thread(target=self._beats, name="progress", daemon=True)
            self._beat.start()

    def stop(self) -> None:
        if self._beat is not None:
            self._quit.set()
            self._beat.join()
            self._beat = None
        super().stop()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._said[task_id] = (description, False)  # the caller announces what it starts
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or not task.visible:
                return
            state = (task.description, task.finished)
            if self._said.get(task_id) == state:
                return
            self._said[task_id] = state
            line = _line(task)
        self._print(line)

    def _beats(self) -> None:
        while not self._quit.wait(self.heartbeat):
            with self._lock:  # the tasks' samples change under updates from other threads
                lines = [_line(t) for t in self._tasks.values() if t.visible and not t.finished]
            for line in lines:
                self._print(line)

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def _line(task: Task) -> str:
    """One task's state: description, done/total, info, elapsed and ETA (or ``done``)."""
    parts = [task.description]
    if task.total is not None:
        parts.append(f"{task.completed:.0f}/{task.total:.0f}")
    info = task.fields.get("info")
    if info:
        parts.append(str(info))
    parts.append(f"elapsed {_clock(task.elapsed)}")
    if task.finished:
        parts.append("done")
    elif task.time_remaining is not None:
        parts.append(f"ETA {_clock(task.time_remaining)}")
    return " ".join(parts)


def _clock(seconds: float | None) -> str:
    """``h:mm:ss`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class RelayProgress(Progress):
    """A child process's bars, sent to its parent's (see :mod:`cycleqd.isolation`).

    Keeps rich's bookkeeping here and puts each ``add_task``, ``update`` and ``remove_task`` on
    ``events`` (a multiprocessing queue) as ``(kind, task id, fields)``; the parent applies them
    to its own bar, so a stage run in a child shows the same bars and plain lines as in-process.
    """

    def __init__(self, events: Any) -> None:
        super().__init__(disable=True)
        self.events = events

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self.events.put(("add", int(task_id), {"description": description, **kwargs}))
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self.events.put(("update", int(task_id), kwargs))

    def remove_task(self, task_id: TaskID) -> None:
        super().remove_task(task_id)
        self.events.put(("remove", int(task_id), {}))
