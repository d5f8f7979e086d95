"""One MAP-Elites archive per task, on pyribs' GridArchive.

In archive k the quality (pyribs' objective) is task k's score and the behaviour characteristics
(pyribs' measures) are the other tasks' scores; each cell keeps its best individual (the elite),
stored by id. A child replaces an elite only with a strictly higher quality, as in MAP-Elites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ribs.archives import GridArchive


@dataclass(frozen=True)
class Elite:
    """An archived individual: its id, quality, raw BC scores and grid cell."""

    id: str
    quality: float
    bcs: tuple[float, ...]
    cell: tuple[int, ...]


class TaskArchive:
    """The archive of one task."""

    def __init__(
        self,
        *,
        task: str,
        bc_tasks: list[str],
        ranges: list[tuple[float, float]],
        bins: list[int],
    ) -> None:
        if not bc_tasks:
            raise ValueError("an archive needs at least one BC task (CycleQD needs >= 2 tasks)")
        self.task = task
        self.bc_tasks = list(bc_tasks)
        self.ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        self.bins = [int(b) for b in bins]
        self._grid = GridArchive(
            solution_dim=(),
            dims=self.bins,
            ranges=self.ranges,
            solution_dtype=object,
        )

    def add(self, individual: str, scores: dict[str, float]) -> int:
        """Insert if the individual wins or fills its cell.

        Returns pyribs' status: 0 not added, 1 improved an elite, 2 filled an empty cell.
        """
        bcs = np.array([[scores[t] for t in self.bc_tasks]], dtype=np.float64)
        status = self._grid.add(
            np.array([individual], dtype=object), np.array([scores[self.task]]), bcs
        )["status"]
        return int(status[0])

    def elites(self) -> list[Elite]:
        """All elites, ordered by cell index (a deterministic order for sampling)."""
        data = self._grid.data()
        order = np.argsort(data["index"], kind="stable")
        out = []
        for i in order:
            cell = np.unravel_index(int(data["index"][i]), self.bins)
            out.append(
                Elite(
                    id=str(data["solution"][i]),
                    quality=float(data["objective"][i]),
                    bcs=tuple(float(x) for x in data["measures"][i]),
                    cell=tuple(int(c) for c in cell),
                )
            )
        return out

    def best(self) -> Elite:
        """The highest-quality elite (the earliest cell wins ties)."""
        elites = self.elites()
        if not elites:
            raise ValueError(f"archive {self.task!r} is empty")
        return max(elites, key=lambda e: e.quality)

    @property
    def num_cells(self) -> int:
        return int(np.prod(self.bins))

    def stats(self) -> dict[str, float]:
        """``qd_score`` (sum of elite qualities, qualities are in [0, 1]) and ``coverage``."""
        elites = self.elites()
        return {
            "qd_score": float(sum(e.quality for e in elites)),
            "coverage": len(elites) / self.num_cells,
            "num_elites": len(elites),
            "best_quality": max((e.quality for e in elites), default=0.0),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "bc_tasks": self.bc_tasks,
            "ranges": [list(r) for r in self.ranges],
            "bins": self.bins,
            "elites": [
                {"id": e.id, "quality": e.quality, "bcs": list(e.bcs), "cell": list(e.cell)}
                for e in self.elites()
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskArchive:
        """Rebuild an archive; every stored elite lands back in its own cell."""
        archive = cls(
            task=data["task"],
            bc_tasks=list(data["bc_tasks"]),
            ranges=[tuple(r) for r in data["ranges"]],
            bins=list(data["bins"]),
        )
        for e in data["elites"]:
            scores = {
                archive.task: e["quality"],
                **dict(zip(archive.bc_tasks, e["bcs"], strict=True)),
            }
            if archive.add(e["id"], scores) != 2:
                raise ValueError(f"elite {e['id']} collides with another elite's cell")
        return archive
