"""Tests of the report figures: every layout renders to a readable PNG, saved atomically."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest

from cycleqd.errors import CycleQDError
from cycleqd.report.plots import (
    archive_figure,
    archive_stats,
    heatmap_axes,
    plot_archive,
    plot_archives,
    plot_progress,
    progress_figure,
)

TASKS = ["code", "os", "db", "math"]


def make_archive(
    task: str, bc_tasks: list[str], bins: int | list[int] = 5, n: int = 12, seed: int = 0
) -> dict[str, Any]:
    """A synthetic archive of the run-directory JSON shape, at most one elite per cell."""
    rng = random.Random(seed)
    bins_list = bins if isinstance(bins, list) else [bins] * len(bc_tasks)
    ranges = [[0.0, 0.75] if k % 2 == 0 else [0.1, 0.9] for k in range(len(bc_tasks))]
    elites: dict[tuple[int, ...], dict[str, Any]] = {}
    for i in range(n):
        cell = tuple(rng.randrange(b) for b in bins_list)
        bcs = [
            lo + (c + 0.5) * (hi - lo) / b
            for c, (lo, hi), b in zip(cell, ranges, bins_list, strict=True)
        ]
        elites[cell] = {
            "id": f"gen{i:06d}",
            "quality": round(rng.random(), 3),
            "bcs": bcs,
            "cell": list(cell),
        }
    # Round-trip through JSON so the tests see exactly what a run directory holds.
    return json.loads(
        json.dumps(
            {
                "task": task,
                "bc_tasks": bc_tasks,
                "ranges": ranges,
                "bins": bins_list,
                "elites": list(elites.values()),
            }
        )
    )


def make_metrics(
    n_gen: int = 8, tasks: tuple[str, ...] = ("code", "os", "db")
) -> list[dict[str, Any]]:
    rng = random.Random(1)
    best = dict.fromkeys(tasks, 0.0)
    qd = dict.fromkeys(tasks, 0.0)
    lines = []
    for g in range(n_gen):
        task = tasks[g % len(tasks)]
        scores = {t: round(rng.random(), 3) for t in tasks}
        for t in tasks:
            best[t] = max(best[t], scores[t])
            qd[t] += scores[t] / 4
        lines.append(
            {
                "generation": g,
                "task": task,
                "child": f"gen{g:06d}",
                "scores": scores,
                "inserted": {t: 1 for t in tasks},
                "best_quality": dict(best),
                "qd_score": dict(qd),
                "coverage": {t: g / 100 for t in tasks},
                "seconds": 1.2,
            }
        )
    return lines


def assert_png(path: Path) -> np.ndarray:
    """The file exists, carries the PNG signature and decodes to an RGB(A) image."""
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] > 100 and img.shape[1] > 100
    # Not a blank canvas: a heatmap or plot was actually drawn.
    assert float(img[..., :3].std()) > 0.01
    return img


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- archive figures


@pytest.mark.parametrize(
    ("bc_tasks", "expected_panels"),
    [(["os"], 1), (["os", "db"], 1), (["os", "db", "math"], 3), ([*TASKS[1:], "x"], 6)],
)
def test_panel_layout(bc_tasks: list[str], expected_panels: int) -> None:
    fig = archive_figure(make_archive("code", bc_tasks))
    panels = heatmap_axes(fig)
    assert len(panels) == expected_panels
    # One shared colour bar on top of the heatmaps, nothing else.
    assert len(fig.axes) == expected_panels + 1


def test_pairwise_panels_cover_each_pair_once() -> None:
    fig = archive_figure(make_archive("code", ["os", "db", "math"]))
    pairs = {tuple(ax.get_label().split(":")[1:]) for ax in heatmap_axes(fig)}
    assert pairs == {("os", "db"), ("os", "math"), ("db", "math")}


def test_ticks_are_in_score_units() -> None:
    archive = make_archive("code", ["os", "db"], bins=[15, 15])
    (ax,) = heatmap_axes(archive_figure(archive))
    assert ax.get_xlim() == pytest.approx((0.0, 0.75))
    assert ax.get_ylim() == pytest.approx((0.1, 0.9))
    assert "os" in ax.get_xlabel() and "0.75" in ax.get_xlabel()
    assert "db" in ax.get_ylabel() and "0.9" in ax.get_ylabel()


def test_title_reports_coverage_and_qd_score() -> None:
    archive = make_archive("code", ["os", "db"], bins=2, n=50)
    stats = archive_stats(archive)
    assert stats["coverage"] == 1.0
    expected = sum(e["quality"] for e in archive["elites"])
    assert stats["qd_score"] == pytest.approx(expected)
    title = archive_figure(archive).get_suptitle()
    assert title.startswith("archive code: quality (coverage 100.0%, qd_score ")


def test_pairwise_cell_is_max_over_hidden_axes() -> None:
    archive = {
        "task": "code",
        "bc_tasks": ["os", "db", "math"],
        "ranges": [[0, 1], [0, 1], [0, 1]],
        "bins": [2, 2, 2],
        "elites": [
            {"id": "a", "quality": 0.2, "bcs": [0.1, 0.1, 0.1], "cell": [0, 0, 0]},
            {"id": "b", "quality": 0.7, "bcs": [0.1, 0.1, 0.9], "cell": [0, 0, 1]},
        ],
    }
    fig = archive_figure(archive)
    by_pair = {tuple(ax.get_label().split(":")[1:]): ax for ax in heatmap_axes(fig)}
    mesh = by_pair[("os", "db")].collections[0]
    values = np.ma.getdata(mesh.get_array()).reshape(2, 2)
    mask = np.ma.getmaskarray(mesh.get_array()).reshape(2, 2)
    assert values[0, 0] == pytest.approx(0.7)
    assert mask.sum() == 3


@pytest.mark.parametrize("bc_tasks", [["os"], ["os", "db"], ["os", "db", "math"]])
def test_plot_archive_writes_png(tmp_path: Path, bc_tasks: list[str]) -> None:
    out = plot_archive(make_archive("code", bc_tasks), tmp_path / "archive_code.png")
    assert out == tmp_path / "archive_code.png"
    assert_png(out)
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("bc_tasks", [["os"], ["os", "db"], ["os", "db", "math"]])
def test_empty_archive(tmp_path: Path, bc_tasks: list[str]) -> None:
    archive = make_archive("code", bc_tasks, n=0)
    assert archive["elites"] == []
    assert archive_stats(archive)["coverage"] == 0.0
    fig = archive_figure(archive)
    assert "coverage 0.0%, qd_score 0.000" in fig.get_suptitle()
    assert_png(plot_archive(archive, tmp_path / "empty.png"))


def test_single_elite_and_single_bin(tmp_path: Path) -> None:
    archive = {
        "task": "os",
        "bc_tasks": ["code", "db"],
        "ranges": [[0.0, 1.0], [0.0, 1.0]],
        "bins": [1, 1],
        "elites": [{"id": "gen000001", "quality": 0.5, "bcs": [0.3, 0.4], "cell": [0, 0]}],
    }
    assert archive_stats(archive)["coverage"] == 1.0
    assert_png(plot_archive(archive, tmp_path / "one.png"))


def test_no_bc_axes(tmp_path: Path) -> None:
    archive = {
        "task": "code",
        "bc_tasks": [],
        "ranges": [],
        "bins": [],
        "elites": [{"id": "g", "quality": 0.4, "bcs": [], "cell": []}],
    }
    assert len(heatmap_axes(archive_figure(archive))) == 1
    assert_png(plot_archive(archive, tmp_path / "zero.png"))


def test_cell_recomputed_from_bcs_when_missing() -> None:
    archive = make_archive("code", ["os", "db"], bins=[3, 4], n=1)
    elite = archive["elites"][0]
    cell = elite.pop("cell")
    fig = archive_figure(archive)
    (ax,) = heatmap_axes(fig)
    mask = np.ma.getmaskarray(ax.collections[0].get_array()).reshape(4, 3)
    assert not mask[cell[1], cell[0]] and mask.sum() == 11


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a["elites"][0].__setitem__("cell", [99, 0]),
        lambda a: a["elites"][0].__setitem__("cell", [0]),
        lambda a: a.__setitem__("bins", [5]),
        lambda a: a.__setitem__("ranges", [[0.5, 0.5], [0.0, 1.0]]),
        lambda a: a.pop("bc_tasks"),
        lambda a: a["elites"][0].pop("quality"),
    ],
)
def test_malformed_archive_is_a_user_error(mutate: Any) -> None:
    archive = make_archive("code", ["os", "db"])
    mutate(archive)
    with pytest.raises(CycleQDError):
        archive_figure(archive)


def test_quality_outside_colour_range_still_plots(tmp_path: Path) -> None:
    archive = make_archive("code", ["os", "db"])
    archive["elites"][0]["quality"] = 1.5
    assert_png(plot_archive(archive, tmp_path / "a.png"))
    assert_png(plot_archive(archive, tmp_path / "b.png", vmin=0.0, vmax=2.0))
    with pytest.raises(ValueError):
        archive_figure(archive, vmin=1.0, vmax=1.0)


def test_plot_archives(tmp_path: Path) -> None:
    archives = [
        make_archive(task, [t for t in TASKS[:3] if t != task], seed=k)
        for k, task in enumerate(TASKS[:3])
    ]
    archives.append(make_archive("my task/v2", ["os"], seed=9))
    out_dir = tmp_path / "plots"  # created on demand
    paths = plot_archives(archives, out_dir)
    assert [p.name for p in paths] == [
        "archive_code.png",
        "archive_os.png",
        "archive_db.png",
        "archive_my_task_v2.png",
    ]
    for path in paths:
        assert path.parent == out_dir
        assert_png(path)
    assert no_temp_files(out_dir)


def test_overwrite_is_atomic_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "archive_code.png"
    path.write_bytes(b"old")
    plot_archive(make_archive("code", ["os", "db"]), path)
    assert_png(path)
    assert no_temp_files(tmp_path)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_failed_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("cycleqd.report.plots.os.replace", boom)
    with pytest.raises(RuntimeError):
        plot_archive(make_archive("code", ["os"]), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- progress figure


def test_plot_progress(tmp_path: Path) -> None:
    metrics = make_metrics()
    fig = progress_figure(metrics)
    ax_q, ax_qd = fig.axes
    assert {line.get_label() for line in ax_q.get_lines()} == set(TASKS[:3])
    assert {line.get_label() for line in ax_qd.get_lines()} == set(TASKS[:3])
    line = next(ln for ln in ax_q.get_lines() if ln.get_label() == "code")
    assert list(line.get_xdata()) == list(range(8))
    assert list(line.get_ydata()) == [m["best_quality"]["code"] for m in metrics]
    assert_png(plot_progress(metrics, tmp_path / "progress.png"))
    assert no_temp_files(tmp_path)


def test_progress_tolerates_odd_logs(tmp_path: Path) -> None:
    metrics = make_metrics(n_gen=5)
    metrics.reverse()  # sorted by generation before drawing
    metrics.insert(2, {"event": "resumed"})  # a non-generation line
    del metrics[0]["qd_score"]  # a line missing one field
    fig = progress_figure(metrics)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == sorted(line.get_xdata())
    assert len(fig.axes[1].get_lines()[0].get_xdata()) == 4
    assert_png(plot_progress(metrics, tmp_path / "progress.png"))


@pytest.mark.parametrize("n_gen", [0, 1])
def test_progress_empty_or_single_generation(tmp_path: Path, n_gen: int) -> None:
    path = plot_progress(make_metrics(n_gen=n_gen), tmp_path / "progress.png")
    assert path.is_file()
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100
