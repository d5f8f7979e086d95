"""Archives: cells, elitism, statistics, persistence."""

from __future__ import annotations

import pytest

from cycleqd.search.archive import TaskArchive


def archive() -> TaskArchive:
    return TaskArchive(task="a", bc_tasks=["b", "c"], ranges=[(0.0, 1.0), (0.0, 0.5)], bins=[4, 5])


def test_insert_replaces_only_with_higher_quality() -> None:
    arc = archive()
    assert arc.add("x", {"a": 0.5, "b": 0.1, "c": 0.1}) == 2  # new cell
    assert arc.add("y", {"a": 0.4, "b": 0.15, "c": 0.12}) == 0  # same cell, worse
    assert arc.add("z", {"a": 0.5, "b": 0.15, "c": 0.12}) == 0  # tie keeps the incumbent
    assert arc.add("w", {"a": 0.6, "b": 0.2, "c": 0.11}) == 1  # same cell, better
    assert [e.id for e in arc.elites()] == ["w"]
    assert arc.elites()[0].cell == (0, 1)  # b: 4 bins over [0, 1]; c: 5 bins over [0, 0.5]


def test_cells_and_clipping() -> None:
    arc = archive()
    arc.add("hi", {"a": 0.1, "b": 5.0, "c": 0.49})  # b beyond the range lands in the edge bin
    arc.add("lo", {"a": 0.2, "b": -1.0, "c": 0.0})
    cells = {e.id: e.cell for e in arc.elites()}
    assert cells == {"hi": (3, 4), "lo": (0, 0)}
    assert arc.elites()[0].bcs in {(5.0, 0.49), (-1.0, 0.0)}  # raw scores are kept


def test_stats_and_best() -> None:
    arc = archive()
    arc.add("p", {"a": 0.3, "b": 0.1, "c": 0.1})
    arc.add("q", {"a": 0.7, "b": 0.9, "c": 0.4})
    stats = arc.stats()
    assert stats["qd_score"] == pytest.approx(1.0)
    assert stats["coverage"] == pytest.approx(2 / 20)
    assert arc.best().id == "q"


def test_json_round_trip() -> None:
    arc = archive()
    for i in range(6):
        arc.add(f"i{i}", {"a": i / 10, "b": i / 6, "c": i / 13})
    back = TaskArchive.from_json(arc.to_json())
    assert back.to_json() == arc.to_json()


def test_empty_archive_best_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        archive().best()
