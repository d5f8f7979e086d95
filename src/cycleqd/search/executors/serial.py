"""In-process evaluation: one child at a time, or a group of children in shared forward passes.

With ``children_per_batch`` K > 1 the executor holds up to K children in flight and evaluates them
together: the resident model keeps the base weights (plus whatever the group shares), every
affected layer adds each row's child's low-rank delta (:mod:`cycleqd.merging.population`), and each
task runs for all children in lockstep so their rows share every generate call
(:mod:`cycleqd.models.lockstep`). Children that cannot join (a dense Gaussian-mutation delta, a
tensor no hook can vary per row, an engine without row groups) or a group for which the measured
cost model prefers it are materialised and evaluated one at a time, as with K = 1.

Results come back in submission order either way, so the loop breeds exactly the same children
whichever path evaluated them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from cycleqd.merging.genome import Genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.population import PopulationForward, PopulationPlan
from cycleqd.models.lockstep import run_lockstep
from cycleqd.search.executors.base import Evaluation
from cycleqd.tasks.base import Task, TaskResult

log = logging.getLogger("cycleqd.population")
PopulationMode = Literal["auto", "on", "off"]


def evaluate_genome(
    materialiser: Materialiser, engine: Any, tasks: Sequence[Task], genome: Genome
) -> dict[str, TaskResult]:
    """Load ``genome`` into the resident model and run every task on it."""
    materialiser.load(genome)
    return {task.name: task.evaluate(engine) for task in tasks}


def records_of(results: dict[str, TaskResult]) -> dict[str, dict[str, Any]]:
    return {name: {"quality": r.quality, "records": r.records} for name, r in results.items()}


class GroupEvaluator:
    """Scores a group of genomes on every task, batched where that is possible and pays.

    Args:
        materialiser: writes weights into the resident model.
        engine: the resident engine; the batched path needs ``row_groups`` and ``time_forward``
            (see :class:`~cycleqd.models.engine.HFEngine`).
        tasks: the tasks.
        mode: ``auto`` (the measured cost model decides), ``on`` (always batch what can be
            batched), ``off`` (always one child at a time: the reference path).
    """

    def __init__(
        self,
        materialiser: Materialiser,
        engine: Any,
        tasks: Sequence[Task],
        *,
        mode: PopulationMode = "auto",
    ) -> None:
        self.materialiser = materialiser
        self.engine = engine
        self.tasks = list(tasks)
        self.mode = mode
        self.population: PopulationForward | None = None
        if mode != "off" and hasattr(engine, "row_groups"):
            self.population = PopulationForward(
                materialiser.basis, materialiser, getattr(engine, "dtype", None) or _dtype(engine)
            )
        self._pays: dict[tuple[int, int], bool] = {}
        self.last_paths: list[str] = []

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, TaskResult]]:
        """Results per genome, in order; :attr:`last_paths` says how each was evaluated."""
        plan = self._plan(genomes)
        results: list[dict[str, TaskResult] | None] = [None] * len(genomes)
        paths = [""] * len(genomes)
        if plan.batched:
            started = time.perf_counter()
            for i, r in zip(plan.batched, self._batched(genomes, plan), strict=True):
                results[i] = r
                paths[i] = f"batched({len(plan.batched)})"
            log.info(
                "population forward: %d children in shared passes (rank %d) in %.1fs",
                len(plan.batched),
                plan.rank,
                time.perf_counter() - started,
            )
        for i in plan.fallback:
            results[i] = evaluate_genome(self.materialiser, self.engine, self.tasks, genomes[i])
            paths[i] = "materialised" + (f": {plan.reasons[i]}" if i in plan.reasons else "")
            if len(genomes) > 1:
                log.info("child %d of %d materialised alone (%s)", i, len(genomes), paths[i])
        self.last_paths = paths
        return [r for r in results if r is not None]

    def _plan(self, genomes: Sequence[Genome]) -> PopulationPlan:
        n = len(genomes)
        if getattr(self.materialiser, "combine", "sum") != "sum":
            why = "basis.combine: ties is not linear in the coefficients"
            return PopulationPlan(fallback=list(range(n)), reasons=dict.fromkeys(range(n), why))
        if self.population is None or n < 2:
            why = "alone in its group" if n < 2 else "population forward off or unsupported"
            return PopulationPlan(fallback=list(range(n)), reasons=dict.fromkeys(range(n), why))
        plan = self.population.plan(genomes)
        if plan.batched and self.mode == "auto" and not self._batching_pays(genomes, plan):
            why = "cost model: per-child materialisation is faster for this rank"
            plan.fallback = sorted(plan.fallback + plan.batched)
            plan.reasons.update(dict.fromkeys(plan.batched, why))
            plan.batched = []
        return plan

    def _batching_pays(self, genomes: Sequence[Genome], plan: PopulationPlan) -> bool:
        """The measured cost model: one hooked forward of the whole group against K plain ones.

        Timed once per (group size, rank bucket) on this engine: a forward over K x b rows with
        the group's per-row deltas, against K forwards over b rows of a materialised model plus
        K materialisations, with b the engine's batch size (at most 32). Per-row products cost
        ``rank * (in + out)`` per token; what a shared pass saves is the per-pass overhead and
        the inefficiency of small batches, which a GPU has and a CPU already compute-bound at b
        rows does not (measured in benchmarks/search_throughput.py).
        """
        assert self.population is not None
        k = len(plan.batched)
        key = (k, max(1, plan.rank).bit_length())
        if key not in self._pays:
            timer = getattr(self.engine, "time_forward", None)
            if timer is None:
                self._pays[key] = True
            else:
                # rows per child as the engine batches them (a CPU is compute-bound well
                # before a GPU is, so the per-row gain of a bigger batch depends on this)
                b = max(1, min(int(getattr(self.engine, "batch_size", 8)), 32))
                with self.population.activate(genomes, plan):
                    self.engine.row_groups = self.population
                    try:
                        batched = timer(k * b, groups=[i for i in range(k) for _ in range(b)])
                    finally:
                        self.engine.row_groups = None
                started = time.perf_counter()
                self.materialiser.load(genomes[plan.batched[0]])
                load = time.perf_counter() - started
                single = timer(b)
                self._pays[key] = batched < k * (single + load)
                log.info(
                    "cost model (K=%d, rank %d): one shared pass %.3fs, %d single passes %.3fs"
                    " -> %s",
                    k,
                    plan.rank,
                    batched,
                    k,
                    k * (single + load),
                    "batched" if self._pays[key] else "materialised",
                )
        return self._pays[key]

    def _batched(
        self, genomes: Sequence[Genome], plan: PopulationPlan
    ) -> list[dict[str, TaskResult]]:
        assert self.population is not None
        k = len(plan.batched)
        out: list[dict[str, TaskResult]] = [{} for _ in range(k)]
        with self.population.activate(genomes, plan):
            self.engine.row_groups = self.population
            try:
                for task in self.tasks:
                    scored = run_lockstep(self.engine, k, lambda view, _i, t=task: t.evaluate(view))
                    for i, r in enumerate(scored):
                        out[i][task.name] = r
            finally:
                self.engine.row_groups = None
        return out


def _dtype(engine: Any) -> Any:
    import torch

    module = getattr(engine, "module", None)
    if module is None:
        return torch.float32
    return next(module.parameters()).dtype


class SerialExecutor:
    """In this process: one genome at a time, or ``children_per_batch`` together.

    Results are returned in submission order.
    """

    def __init__(
        self,
        materialiser: Materialiser,
        engine: Any,
        tasks: Sequence[Task],
        export: Callable[[Genome, Path], str] | None = None,
        *,
        children_per_batch: int = 1,
        population: PopulationMode = "auto",
    ) -> None:
        self.materialiser = materialiser
        self.engine = engine
        self.tasks = list(tasks)
        self.children_per_batch = max(1, children_per_batch)
        self.group = GroupEvaluator(materialiser, engine, tasks, mode=population)
        self._export = export
        self._queue: deque[tuple[str, Genome, bool]] = deque()
        self._done: deque[Evaluation] = deque()

    @property
    def capacity(self) -> int:
        return self.children_per_batch

    def submit(self, key: str, genome: Genome, *, records: bool = False) -> None:
        self._queue.append((key, genome, records))

    def next_result(self) -> Evaluation:
        if not self._done:
            if not self._queue:
                raise RuntimeError("next_result() with nothing submitted")
            n = min(len(self._queue), self.children_per_batch)
            batch = [self._queue.popleft() for _ in range(n)]
            results = self.group.evaluate([g for _, g, _ in batch])
            for (key, _, want), res, path in zip(
                batch, results, self.group.last_paths, strict=True
            ):
                scores = {name: r.quality for name, r in res.items()}
                self._done.append(Evaluation(key, scores, records_of(res) if want else None, path))
        return self._done.popleft()

    def export(self, genome: Genome, out_dir: Path) -> str:
        if self._export is None:
            raise RuntimeError("this executor was built without an export function")
        return self._export(genome, out_dir)

    def close(self) -> None:
        self._queue.clear()
        self._done.clear()
