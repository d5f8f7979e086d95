"""CMA-ME in the cycle: one pyribs CMA-ES emitter per task archive (``search.emitter: cma_me``).

Why: the authors' report names "advanced evolutionary methods such as CMA-ME" as the next step,
and a merge search is starved of evaluations (each child is minutes of generation), so what each
evaluation teaches the search matters. An emitter learns a search distribution (mean, step size,
covariance) over the small group genome of :mod:`cycleqd.merging.groups` from which of its
children improved its archive.

How it fits the loop:
- generation ``g`` goes to the emitter of archive ``q = g mod K``, as the paper's cycle picks the
  archive whose parents breed; the emitter hands out the next solution of its current CMA-ES
  batch (asking a new batch when none is open);
- every child is scored on every task and inserted into every archive as before; each emitter
  also keeps a pyribs ``GridArchive`` over the same cells holding solution vectors (its
  *shadow*), which gives pyribs' improvement values (and CMA-MAE's soft thresholds) and the
  elites a restart starts from; every child enters every shadow;
- when all of a batch's children have been scored, the emitter is told, and CMA-ES adapts.

All randomness comes from the run's seed (one stream per emitter), and the whole state (emitters,
shadows, open batches and which generation holds which solution) is saved with the run's state
after every generation, so a resumed run proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ribs.archives import GridArchive
from ribs.emitters import EvolutionStrategyEmitter

from cycleqd.config import EmitterConfig
from cycleqd.errors import CycleQDError
from cycleqd.merging.genome import Genome
from cycleqd.merging.groups import GroupGenome
from cycleqd.search.archive import TaskArchive

STATE_FORMAT = 1
# The improvement value of a child a constraint rejected: below any real one (finite, so
# CMA-ES's stopping checks on the ranking values stay meaningful).
REJECTED_VALUE = -1e9


class CMAMEEmitters:
    """The K emitters of a CMA-ME run and their open batches (see the module docstring)."""

    def __init__(
        self,
        config: EmitterConfig,
        space: GroupGenome,
        archives: Sequence[TaskArchive],
        task_experts: Sequence[int],
        expert_scores: Mapping[str, Mapping[str, float]],
        seed: int,
    ) -> None:
        self.config = config
        self.space = space
        self.tasks = [a.task for a in archives]
        self.bc_tasks = [list(a.bc_tasks) for a in archives]
        streams = np.random.SeedSequence([seed, 0xC3A]).spawn(2 * len(archives))
        learning = config.archive_learning_rate
        self.shadows = [
            GridArchive(
                solution_dim=space.dim,
                dims=a.bins,
                ranges=a.ranges,
                learning_rate=learning,
                threshold_min=0.0 if learning is not None else -np.inf,
                seed=int(streams[2 * q].generate_state(1)[0]),
            )
            for q, a in enumerate(archives)
        ]
        experts = list(expert_scores)
        for e, name in enumerate(experts):
            scales = np.zeros(len(experts))
            scales[e] = 1.0
            self._add_everywhere(space.point(scales), expert_scores[name])
        self.emitters = [
            EvolutionStrategyEmitter(
                self.shadows[q],
                x0=self._x0(task_experts[q]),
                sigma0=config.sigma0,
                ranker=config.ranker,
                batch_size=config.batch_size,
                seed=int(streams[2 * q + 1].generate_state(1)[0]),
            )
            for q in range(len(archives))
        ]
        # per emitter: the open batch's solutions, which generation holds which of them, and
        # the objective, measures and shadow insertion result of each scored one
        self.batches: list[dict[str, Any] | None] = [None] * len(archives)

    def _x0(self, expert: int) -> np.ndarray:
        if self.config.x0 == "sum":
            return self.space.point(np.ones(self.space.n_experts))
        scales = np.zeros(self.space.n_experts)
        scales[expert] = 1.0
        return self.space.point(scales)

    def _objective(self, q: int, scores: Mapping[str, float]) -> tuple[float, list[float]]:
        return float(scores[self.tasks[q]]), [float(scores[t]) for t in self.bc_tasks[q]]

    def _add_everywhere(
        self, solution: np.ndarray, scores: Mapping[str, float]
    ) -> list[dict[str, Any]]:
        """Insert a scored solution into every shadow; pyribs' insertion result per shadow."""
        infos = []
        for q, shadow in enumerate(self.shadows):
            objective, measures = self._objective(q, scores)
            info = shadow.add(solution[None], np.array([objective]), np.array([measures]))
            infos.append({k: np.asarray(v)[0] for k, v in info.items()})
        return infos

    # -- the loop's side ---------------------------------------------------------------------
    def propose(self, generation: int) -> tuple[np.ndarray, dict[str, Any]] | None:
        """Generation ``generation``'s solution from the emitter of archive ``g mod K``, or None
        when that emitter's batch is all handed out and still being scored (wait for results).
        A generation proposed before (a child bred again on resume) gets the same solution."""
        q = generation % len(self.emitters)
        batch = self.batches[q]
        if batch is not None and generation in batch["given"]:
            i = batch["given"][generation]
            return batch["solutions"][i].copy(), {"emitter": q, "index": i}
        if batch is None:
            solutions = np.asarray(self.emitters[q].ask(), dtype=np.float64)
            batch = {"solutions": solutions, "given": {}, "told": {}}
            self.batches[q] = batch
        i = len(batch["given"])
        if i >= len(batch["solutions"]):
            return None
        batch["given"][generation] = i
        return batch["solutions"][i].copy(), {"emitter": q, "index": i}

    def genome(self, solution: np.ndarray) -> Genome:
        return self.space.genome(solution)

    def record(self, generation: int, scores: Mapping[str, float], rejected: bool) -> None:
        """A scored child: into every shadow (unless a constraint rejected it, as the archives
        did); its emitter is told once its whole batch is scored."""
        q = generation % len(self.emitters)
        batch = self.batches[q]
        if batch is None or generation not in batch["given"]:
            raise CycleQDError(f"generation {generation} was not proposed by emitter {q}")
        i = batch["given"][generation]
        solution = batch["solutions"][i]
        objective, measures = self._objective(q, scores)
        if rejected:  # never entered an archive: it ranks below everything
            info = {"status": 0, "value": REJECTED_VALUE}
        else:
            info = self._add_everywhere(solution, scores)[q]
        batch["told"][i] = (objective, measures, int(info["status"]), float(info["value"]))
        if len(batch["told"]) == len(batch["solutions"]):
            order = range(len(batch["solutions"]))
            told = [batch["told"][j] for j in order]
            self.emitters[q].tell(
                batch["solutions"],
                np.array([t[0] for t in told]),
                np.array([t[1] for t in told]),
                {
                    "status": np.array([t[2] for t in told], dtype=np.int32),
                    "value": np.array([t[3] for t in told]),
                },
            )
            self.batches[q] = None

    # -- the run directory's side ------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything, pickled (pyribs' emitters hold their CMA-ES and random generators)."""
        blob = pickle.dumps(
            {"shadows": self.shadows, "emitters": self.emitters, "batches": self.batches}
        )
        return {"format": STATE_FORMAT, "pickle": base64.b64encode(blob).decode("ascii")}

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise CycleQDError(
                f"emitter state of format {state.get('format')!r}; this version reads "
                f"{STATE_FORMAT}"
            )
        data = pickle.loads(base64.b64decode(state["pickle"]))  # the run's own file
        self.shadows, self.emitters, self.batches = (
            data["shadows"],
            data["emitters"],
            data["batches"],
        )

    def stats(self) -> list[dict[str, Any]]:
        """Per emitter: CMA-ES iterations and restarts, its step size, its open batch."""
        out = []
        for emitter, batch in zip(self.emitters, self.batches, strict=True):
            out.append(
                {
                    "iterations": int(getattr(emitter, "itrs", 0)),
                    "restarts": int(getattr(emitter, "restarts", 0)),
                    "open": 0 if batch is None else len(batch["given"]),
                }
            )
        return out
