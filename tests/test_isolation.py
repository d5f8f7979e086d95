"""Work run in a child process: its result, its progress on the parent's bar, its errors and
its peak memory come back to the parent, and the parent keeps none of its memory."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from helpers import child_work
from rich.progress import Progress, TaskID

from cycleqd.errors import CycleQDError
from cycleqd.isolation import run_in_child
from cycleqd.resources import peak_rss_bytes, reset_peak, rss_bytes


class RecordingBar(Progress):
    """A parent's bar that remembers what was shown on it."""

    def __init__(self) -> None:
        super().__init__(disable=True)
        self.shown: list[tuple[str, Any]] = []

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        self.shown.append(("add", description))
        return super().add_task(description, *args, **kwargs)

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        self.shown.append(("update", kwargs.get("completed")))
        super().update(task_id, **kwargs)

    def remove_task(self, task_id: TaskID) -> None:
        self.shown.append(("remove", None))
        super().remove_task(task_id)


def test_a_child_returns_its_result_and_shows_its_progress_on_the_parents_bar() -> None:
    bar = RecordingBar()
    result = run_in_child(child_work, 3, bar=bar)
    assert result["pid"] != os.getpid()
    assert result == {"pid": result["pid"], "n": 3, "relayed": True}
    assert bar.shown == [
        ("add", "child steps"),
        ("update", 1),
        ("update", 2),
        ("update", 3),
        ("remove", None),
    ]
    assert not bar.tasks  # nothing of the child's is left on the bar


def test_without_a_bar_the_child_draws_none() -> None:
    assert run_in_child(child_work, 2)["relayed"] is False


def test_a_childs_error_reaches_the_caller_as_the_same_error() -> None:
    with pytest.raises(CycleQDError, match=r"tasks\.yaml: no such suite"):
        run_in_child(child_work, 1, fail="tasks.yaml: no such suite")


def test_a_killed_child_is_a_clear_error() -> None:
    with pytest.raises(CycleQDError, match="child_work: its child process ended without an answer"):
        run_in_child(child_work, 1, fail="killed")


@pytest.mark.skipif(sys.platform != "linux", reason="per-stage peaks need Linux's clear_refs")
def test_the_childs_peak_counts_in_the_stage_and_its_memory_stays_there() -> None:
    assert reset_peak()
    before = rss_bytes()
    run_in_child(child_work, 1)
    assert peak_rss_bytes() > 300 * 2**20  # the child's 300 MiB block, not the parent's
    assert rss_bytes() - before < 100 * 2**20
