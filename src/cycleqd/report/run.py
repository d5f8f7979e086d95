"""A run directory's pictures: elite maps and progress curves.

Lives with the reports, not with the search: the search calls it, it never calls the search.
"""

from __future__ import annotations

from typing import Any

from cycleqd.search.store import RunStore


def plot_run(store: RunStore, archives: list[dict[str, Any]]) -> None:
    """Elite maps and progress curves into ``plots/`` (imported lazily: matplotlib is slow)."""
    from cycleqd.report.plots import plot_archives, plot_progress

    plot_archives(archives, store.plots_dir)
    plot_progress(store.read_metrics(), store.plots_dir / "progress.png")
