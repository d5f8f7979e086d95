"""The vision report's pictures: predicted masks per model, and merge retention by similarity.

Object-oriented matplotlib on an Agg canvas (no global backend, no display), written atomically
like the search's own plots, so a report refreshed mid-run never embeds half a PNG.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

_MASK = ListedColormap(["#202020", "#f5f5f5"])


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def masks_figure(
    columns: Sequence[str],
    images: torch.Tensor,
    truths: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    scores: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """A grid: one column per shown test image (titled by its task), rows = the image, the true
    mask, then each model's predicted mask (its per-image mIoU in the corner when given)."""
    n_rows, n_cols = 2 + len(predictions), len(columns)
    fig = Figure(figsize=(1.25 * n_cols + 1.6, 1.25 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    labels = ["image", "truth", *predictions]
    for c in range(n_cols):
        axes[0][c].imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[0][c].set_title(columns[c], fontsize=8)
        axes[1][c].imshow(truths[c].numpy(), cmap=_MASK, vmin=0, vmax=1)
        for r, (model, pred) in enumerate(predictions.items(), start=2):
            axes[r][c].imshow(pred[c].numpy(), cmap=_MASK, vmin=0, vmax=1)
            if scores is not None:
                axes[r][c].text(
                    0.02,
                    0.02,
                    f"{scores[model][c]:.2f}",
                    transform=axes[r][c].transAxes,
                    fontsize=6,
                    color="#e07020",
                    va="bottom",
                )
    for r in range(n_rows):
        axes[r][0].set_ylabel(labels[r], rotation=0, ha="right", va="center", fontsize=7)
        for c in range(n_cols):
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
    fig.subplots_adjust(left=0.2, wspace=0.05, hspace=0.08)
    return fig


def similarity_figure(rows: Sequence[Mapping[str, object]], method: str) -> Figure:
    """Retention of each pair's ``method`` merge against the two similarity measures."""
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, key, label in (
        (axes[0], "label_iou", "task design: label IoU"),
        (axes[1], "cosine", "task-vector cosine"),
    ):
        xs = np.array([float(r[key]) for r in rows])  # type: ignore[arg-type]
        ys = np.array([float(r[f"{method}_retention"]) for r in rows])  # type: ignore[arg-type]
        ax.scatter(xs, ys)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(
                str(r["pair"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_xlabel(label)
        ax.set_ylabel(f"{method} merge: mIoU kept (merge / expert)")
        ax.grid(True, alpha=0.3)
    fig.suptitle("pairwise merges: how much of both experts a merge keeps, by task similarity")
    fig.tight_layout()
    return fig
