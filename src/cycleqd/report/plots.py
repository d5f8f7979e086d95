"""Figures of a CycleQD run: one elite map per archive and the progress over generations.

The plots are built from the plain JSON a run directory stores (archive files and the JSONL
metrics log), not from live search objects, so a report can be drawn for a finished, crashed or
still-running run without importing the search machinery or a model.

Only the object-oriented matplotlib API is used: every :class:`~matplotlib.figure.Figure` gets
its own Agg canvas, so nothing here selects a global backend (``matplotlib.use``) or needs a
display, and the caller's own pyplot state is left untouched. Every file is written atomically
(a temporary file in the same directory, then :func:`os.replace`), so a viewer or a sync job
never sees a half-written PNG when the report is refreshed while the run goes on.

Archive JSON, as a run directory stores it::

    {"task": "code", "bc_tasks": ["os", "db"], "ranges": [[0.0, 0.75], [0.1, 0.9]],
     "bins": [15, 15],
     "elites": [{"id": "gen000012", "quality": 0.41, "bcs": [0.33, 0.52], "cell": [6, 8]}]}
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from ribs.archives import GridArchive

from cycleqd.errors import CycleQDError

__all__ = [
    "archive_figure",
    "archive_stats",
    "heatmap_axes",
    "plot_archive",
    "plot_archives",
    "plot_progress",
    "progress_figure",
]

#: Colour of cells that hold no elite; distinct from every colour of the quality colour map.
EMPTY_COLOUR = "#d9d9d9"
#: Colour map of elite quality; perceptually uniform, so equal quality steps look equal.
CMAP_NAME = "viridis"
#: Prefix of the label of every heatmap axes, so callers and tests can tell them from colour bars.
HEATMAP_LABEL = "heatmap"
DPI = 120
#: Side of one pairwise panel in inches; the corner layout grows with the number of BC axes.
PANEL_INCHES = 3.2


@dataclass(frozen=True)
class _Archive:
    """An archive checked once, so the drawing code can index without re-validating."""

    task: str
    bc_tasks: tuple[str, ...]
    ranges: tuple[tuple[float, float], ...]
    bins: tuple[int, ...]
    cells: np.ndarray  # (n_elites, n_bcs) int
    quality: np.ndarray  # (n_elites,) float

    @property
    def n_bcs(self) -> int:
        return len(self.bc_tasks)


# --------------------------------------------------------------------------------------------
# Archive parsing and statistics
# --------------------------------------------------------------------------------------------


def _parse_archive(archive: Mapping[str, Any]) -> _Archive:
    """Validate an archive dict and turn it into arrays.

    A run directory can be hand-edited or truncated, so a malformed archive raises
    :class:`CycleQDError` naming the problem instead of failing deep inside matplotlib. When an
    elite has no ``cell`` it is recomputed from its raw ``bcs`` with the archive's binning, so
    archives written by older code still plot.
    """
    try:
        task = str(archive["task"])
        bc_tasks = tuple(str(name) for name in archive["bc_tasks"])
        ranges = tuple((float(lo), float(hi)) for lo, hi in archive["ranges"])
        bins = tuple(int(b) for b in archive["bins"])
        elites = list(archive.get("elites") or [])
    except (KeyError, TypeError, ValueError) as exc:
        raise CycleQDError(f"malformed archive: {exc!r}") from exc

    d = len(bc_tasks)
    if len(ranges) != d or len(bins) != d:
        raise CycleQDError(
            f"archive {task!r}: {d} bc_tasks but {len(ranges)} ranges and {len(bins)} bins"
        )
    for name, (lo, hi), b in zip(bc_tasks, ranges, bins, strict=True):
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise CycleQDError(f"archive {task!r}: range of {name!r} is [{lo}, {hi}]")
        if b < 1:
            raise CycleQDError(f"archive {task!r}: {name!r} has {b} bins")

    cells = np.zeros((len(elites), d), dtype=np.int64)
    quality = np.zeros(len(elites), dtype=float)
    for k, elite in enumerate(elites):
        ident = elite.get("id", k) if isinstance(elite, Mapping) else k
        try:
            quality[k] = float(elite["quality"])
            if elite.get("cell") is not None:
                cell = [int(c) for c in elite["cell"]]
            else:
                cell = _cell_of([float(v) for v in elite["bcs"]], ranges, bins)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise CycleQDError(f"archive {task!r}: malformed elite {ident!r}: {exc!r}") from exc
        if not math.isfinite(quality[k]):
            raise CycleQDError(f"archive {task!r}: elite {ident!r} has quality {quality[k]}")
        if len(cell) != d or any(not 0 <= c < b for c, b in zip(cell, bins, strict=True)):
            raise CycleQDError(
                f"archive {task!r}: elite {ident!r} has cell {cell} outside bins {list(bins)}"
            )
        cells[k] = cell
    return _Archive(task, bc_tasks, ranges, bins, cells, quality)


def _cell_of(
    bcs: Sequence[float], ranges: Sequence[tuple[float, float]], bins: Sequence[int]
) -> list[int]:
    """The cell pyribs' grid puts raw BC scores in (out-of-range scores clipped to the edge
    bins), so a map drawn from scores alone matches the archive the search kept."""
    if len(bcs) != len(bins):
        raise ValueError(f"{len(bcs)} bcs for {len(bins)} axes")
    grid = GridArchive(solution_dim=(), dims=list(bins), ranges=list(ranges))
    index = grid.index_of(np.array([bcs], dtype=np.float64))
    return [int(c[0]) for c in grid.int_to_grid_index(index).T]


def _best_per_cell(arch: _Archive) -> tuple[np.ndarray, np.ndarray]:
    """Distinct occupied cells and their best quality (a valid archive has one elite a cell)."""
    if len(arch.quality) == 0:
        return np.zeros((0, arch.n_bcs), dtype=np.int64), np.zeros(0)
    cells, inverse = np.unique(arch.cells, axis=0, return_inverse=True)
    best = np.full(len(cells), -np.inf)
    np.maximum.at(best, inverse.reshape(-1), arch.quality)
    return cells, best


def archive_stats(archive: Mapping[str, Any]) -> dict[str, float]:
    """Coverage (fraction of occupied cells) and QD score (sum of elite qualities) of an archive.

    Computed from the archive itself, so the figure title is right even without a metrics log.
    Duplicate elites in one cell count once, with their best quality.
    """
    arch = _parse_archive(archive)
    cells, best = _best_per_cell(arch)
    n_cells = math.prod(arch.bins)
    return {
        "n_elites": float(len(cells)),
        "n_cells": float(n_cells),
        "coverage": len(cells) / n_cells,
        "qd_score": float(best.sum()),
    }


def _projected_grid(arch: _Archive, x_axis: int | None, y_axis: int | None) -> np.ndarray:
    """Best quality per (y, x) cell with every other BC axis maximised out; NaN where empty.

    Projecting straight from the elite list keeps memory at the size of one 2-D panel, where
    materialising the full d-dimensional grid would explode with many axes or fine bins.
    """
    nx = arch.bins[x_axis] if x_axis is not None else 1
    ny = arch.bins[y_axis] if y_axis is not None else 1
    grid = np.full((ny, nx), np.nan)
    if len(arch.quality):
        xi = arch.cells[:, x_axis] if x_axis is not None else np.zeros(len(arch.quality), int)
        yi = arch.cells[:, y_axis] if y_axis is not None else np.zeros(len(arch.quality), int)
        np.fmax.at(grid, (yi, xi), arch.quality)  # fmax ignores the NaN of empty cells
    return grid


# --------------------------------------------------------------------------------------------
# Archive figures
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas, so saving never consults the global backend."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _cmap() -> Colormap:
    return colormaps[CMAP_NAME].with_extremes(bad=EMPTY_COLOUR)


def _axis_label(arch: _Archive, axis: int) -> str:
    lo, hi = arch.ranges[axis]
    return f"{arch.bc_tasks[axis]} score [{lo:g}, {hi:g}]"


def _edges(arch: _Archive, axis: int) -> np.ndarray:
    lo, hi = arch.ranges[axis]
    return np.linspace(lo, hi, arch.bins[axis] + 1)


def _draw_panel(
    ax: Axes,
    arch: _Archive,
    x_axis: int | None,
    y_axis: int | None,
    cmap: Colormap,
    norm: Normalize,
) -> Any:
    """Draw one heatmap with bin edges in score units, so ticks read as scores, not indices."""
    grid = np.ma.masked_invalid(_projected_grid(arch, x_axis, y_axis))
    x_edges = _edges(arch, x_axis) if x_axis is not None else np.array([0.0, 1.0])
    y_edges = _edges(arch, y_axis) if y_axis is not None else np.array([0.0, 1.0])
    ax.set_facecolor(EMPTY_COLOUR)  # masked (empty) cells are not drawn; the face shows through
    mesh = ax.pcolormesh(
        x_edges, y_edges, grid, cmap=cmap, norm=norm, edgecolors="white", linewidth=0.3
    )
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    names = [arch.bc_tasks[a] if a is not None else "-" for a in (x_axis, y_axis)]
    ax.set_label(f"{HEATMAP_LABEL}:{names[0]}:{names[1]}")
    if x_axis is None:
        ax.set_xticks([])
        ax.set_xlabel("(no behaviour characteristics)")
    else:
        ax.set_xlabel(_axis_label(arch, x_axis))
    if y_axis is None:
        ax.set_yticks([])
    else:
        ax.set_ylabel(_axis_label(arch, y_axis))
    if len(arch.quality) == 0:  # say so, rather than leave an all-grey map to interpretation
        ax.text(0.5, 0.5, "no elites yet", ha="center", va="center", transform=ax.transAxes)
    return mesh


def _title(arch: _Archive, archive: Mapping[str, Any]) -> str:
    stats = archive_stats(archive)
    return (
        f"archive {arch.task}: quality "
        f"(coverage {100 * stats['coverage']:.1f}%, qd_score {stats['qd_score']:.3f})"
    )


def archive_figure(archive: Mapping[str, Any], *, vmin: float = 0.0, vmax: float = 1.0) -> Figure:
    """Build the elite-map figure of one archive without saving it.

    Layout by the number of BC axes: 0 or 1, a single-row heatmap; 2, one 2-D heatmap; more, a
    corner plot with one panel per pair of BC axes (x = BC i, y = BC j, i < j), each cell
    showing the best quality over the axes not drawn. All panels share one colour bar with the
    fixed range ``[vmin, vmax]``, so archives and runs can be compared by colour. Heatmap axes
    are labelled ``"heatmap:<x task>:<y task>"``; see :func:`heatmap_axes`.
    """
    arch = _parse_archive(archive)
    if not vmax > vmin:
        raise ValueError(f"vmax ({vmax}) must exceed vmin ({vmin})")
    cmap, norm = _cmap(), Normalize(vmin=vmin, vmax=vmax)
    d = arch.n_bcs

    if d <= 2:
        if d == 2:
            fig = _new_figure(6.4, 5.2)
            x_axis, y_axis = 0, 1
        else:
            fig = _new_figure(8.0, 2.6)
            x_axis, y_axis = (0 if d == 1 else None), None
        ax = fig.add_subplot()
        mesh = _draw_panel(ax, arch, x_axis, y_axis, cmap, norm)
        panels = [ax]
    else:
        n = d - 1
        fig = _new_figure(PANEL_INCHES * n + 1.6, PANEL_INCHES * n + 0.8)
        grid_axes = fig.subplots(n, n, sharex="col", sharey="row", squeeze=False)
        panels = []
        mesh = None
        for row in range(n):
            for col in range(n):
                ax = grid_axes[row][col]
                if col > row:  # upper triangle: each pair is drawn once, below the diagonal
                    ax.remove()
                    continue
                mesh = _draw_panel(ax, arch, col, row + 1, cmap, norm)
                panels.append(ax)
                if row != n - 1:
                    ax.set_xlabel("")
                    ax.tick_params(labelbottom=False)
                if col != 0:
                    ax.set_ylabel("")
                    ax.tick_params(labelleft=False)

    lo, hi = _quality_span(arch)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (lo < vmin, hi > vmax), "both"
    )
    cbar = fig.colorbar(mesh, ax=panels, extend=extend, shrink=0.9 if d > 2 else 1.0)
    cbar.set_label(f"quality ({arch.task} score)")
    fig.suptitle(_title(arch, archive))
    return fig


def _quality_span(arch: _Archive) -> tuple[float, float]:
    if len(arch.quality) == 0:
        return math.inf, -math.inf
    return float(arch.quality.min()), float(arch.quality.max())


def heatmap_axes(fig: Figure) -> list[Axes]:
    """The heatmap panels of a figure from :func:`archive_figure`, colour bar excluded."""
    return [ax for ax in fig.axes if ax.get_label().startswith(f"{HEATMAP_LABEL}:")]


def plot_archive(
    archive: Mapping[str, Any], path: Path, *, vmin: float = 0.0, vmax: float = 1.0
) -> Path:
    """Draw one archive's elite map (see :func:`archive_figure`) and save it atomically as PNG."""
    return _save(archive_figure(archive, vmin=vmin, vmax=vmax), Path(path))


def plot_archives(
    archives: Iterable[Mapping[str, Any]],
    out_dir: Path,
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> list[Path]:
    """Save ``archive_<task>.png`` in ``out_dir`` for every archive, in the order given.

    Task names are made filename-safe (anything but letters, digits, ``.``, ``_`` and ``-``
    becomes ``_``) because they come from user config and may hold slashes or spaces.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for archive in archives:
        name = _safe_name(str(archive.get("task", "unknown")))
        paths.append(plot_archive(archive, out_dir / f"archive_{name}.png", vmin=vmin, vmax=vmax))
    return paths


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


# --------------------------------------------------------------------------------------------
# Progress figure
# --------------------------------------------------------------------------------------------


def _series(
    records: Sequence[Mapping[str, Any]], key: str
) -> dict[str, tuple[list[float], list[float]]]:
    """Per-task (generations, values) of one per-task field, tasks in first-seen order.

    Records lacking the field or a task are skipped rather than plotted as zero, so a metrics
    log whose task set changed, or whose lines were written by older code, still plots.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for rec in records:
        values = rec.get(key)
        if not isinstance(values, Mapping):
            continue
        for task, value in values.items():
            if value is None:
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                continue
            gens, vals = series.setdefault(str(task), ([], []))
            gens.append(float(rec["generation"]))
            vals.append(v)
    return series


def progress_figure(metrics: Iterable[Mapping[str, Any]]) -> Figure:
    """Build the progress figure without saving it.

    Top panel: best quality per archive (task) over generations; bottom panel: each archive's
    QD score. Lines without a ``generation`` are ignored (the log may interleave other
    events), and records are sorted by generation so a resumed run's log still draws left to
    right. The two panels share the generation axis and the task colours.
    """
    records = sorted(
        (rec for rec in metrics if isinstance(rec, Mapping) and rec.get("generation") is not None),
        key=lambda rec: float(rec["generation"]),
    )
    fig = _new_figure(8.0, 6.4)
    ax_q, ax_qd = fig.subplots(2, 1, sharex=True)
    best = _series(records, "best_quality")
    qd = _series(records, "qd_score")
    tasks = list(dict.fromkeys([*best, *qd]))
    colours = {task: f"C{k % 10}" for k, task in enumerate(tasks)}

    for ax, series in ((ax_q, best), (ax_qd, qd)):
        for task, (gens, vals) in series.items():
            # Markers only when sparse: they make a one-generation run visible, clutter a long one.
            marker = "o" if len(gens) <= 30 else None
            ax.plot(gens, vals, label=task, color=colours[task], marker=marker, markersize=3)
        ax.grid(True, alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)

    ax_q.set_ylabel("best quality")
    ax_q.set_title("best quality per archive")
    ax_qd.set_ylabel("qd_score")
    ax_qd.set_title("QD score per archive")
    ax_qd.set_xlabel("generation")
    if tasks:
        ax_q.legend(title="archive (task)", loc="best", fontsize="small")
    fig.suptitle(f"CycleQD progress ({len(records)} generations)")
    return fig


def plot_progress(metrics: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Draw the progress figure (see :func:`progress_figure`) and save it atomically as PNG."""
    return _save(progress_figure(metrics), Path(path))


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically and return ``path``.

    The temporary file lives in the target directory so :func:`os.replace` is a same-filesystem
    rename, which is atomic on POSIX and Windows; on failure it is removed, never left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; a report image is meant to be readable like any output.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path
