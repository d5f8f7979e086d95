"""The CycleQD loop: seed the archives with the experts, then cycle through the tasks.

Generation ``g`` works on archive ``q = g mod K``: two parents are sampled from it, crossed over,
mutated along task ``q``'s expert basis, evaluated on every task, and inserted into every archive
whose cell the child wins. All randomness of generation ``g`` derives from ``(seed, g)``, and the
run directory is committed after every generation, so a crashed run resumes to the exact result of
an uninterrupted one.

The loop is steady-state: it keeps ``executor.capacity`` children in flight, breeding the next one
from the current archives as soon as one returns (generation numbers, hence the task cycle, follow
submission order). With the serial executor that is exactly the classic one-child-per-generation
loop. Children in flight when the process dies are bred again on resume (``in_flight`` in the
state lists their generations).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from cycleqd.config import BCConfig, SearchConfig
from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Combine, Genome, base_genome, expert_genome
from cycleqd.merging.groups import GroupGenome
from cycleqd.merging.materialise import Materialiser
from cycleqd.search.archive import TaskArchive
from cycleqd.search.emitters import CMAMEEmitters
from cycleqd.search.executors import Evaluation, Executor, SerialExecutor
from cycleqd.search.operators import (
    CROSSOVERS,
    FINAL_MERGES,
    MUTATIONS,
    SAMPLERS,
    Breeding,
    Finishing,
)
from cycleqd.search.store import RunStore
from cycleqd.tasks.base import Task


def generation_rngs(seed: int, generation: int) -> tuple[np.random.Generator, torch.Generator]:
    """Independent generators for parent sampling and for the operators of one generation.

    Keyed by ``(seed, generation)`` rather than drawn from one running stream, so any generation
    can be redone after a crash without replaying the ones before it.
    """
    seq = np.random.SeedSequence([seed, generation])
    sampling_seq, operator_seq = seq.spawn(2)
    torch_rng = torch.Generator().manual_seed(
        int(operator_seq.generate_state(1, np.uint64)[0] >> 1)
    )
    return np.random.default_rng(sampling_seq), torch_rng


def auto_range(expert_scores: Sequence[float]) -> tuple[float, float]:
    """The paper's BC range: 85% of the weakest expert's score to 115% of the strongest.

    When every expert scores the same (often 0 on a hard task) the rule yields an empty range;
    then the full score range [0, 1] is used.
    """
    low, high = 0.85 * min(expert_scores), 1.15 * max(expert_scores)
    if high - low < 1e-9:
        return (0.0, 1.0)
    return (low, high)


ProgressFn = Callable[[dict[str, Any]], None]


class CycleQD:
    """One run of the search over a resident model.

    Args:
        basis: the experts' SVD bases.
        materialiser: writes a genome's weights into the resident model.
        engine: what the tasks evaluate (holds the resident model).
        tasks: the K tasks; archive k uses task k's score as quality.
        task_experts: for each task, the index of the expert whose basis mutation follows.
        search: the loop's budget and operators (the config's ``search`` section).
        store: the run directory.
        seed: every random choice of the run derives from it.
        bcs: per task, how its score is binned as a BC (default: the paper's auto range, 15
            bins).
        constraints: ``(task name, max_drop)``: children scoring more than ``max_drop`` below
            the base model on that task enter no archive.
        combine, combine_density: how a genome's expert parts form its task vector
            (``basis.combine``, ``basis.density``), which the final merge may need.
        export: called with the final genome once materialised; writes the final model.
        progress: receives an event dict after each step (for progress bars and logs).
        seeding: the experts' scores (``expert_scores``) and the base model's (``base_scores``,
            None without constraints) from another run of the same experts, tasks and engine;
            the seeding phase takes them instead of evaluating the experts again.
    """

    def __init__(
        self,
        *,
        basis: ExpertBasis,
        task_experts: Sequence[int],
        search: SearchConfig,
        store: RunStore,
        seed: int = 0,
        bcs: Sequence[BCConfig] = (),
        constraints: Sequence[tuple[str, float]] = (),
        combine: Combine = "sum",
        combine_density: float = 0.5,
        materialiser: Materialiser | None = None,
        engine: Any = None,
        tasks: Sequence[Task] | None = None,
        executor: Executor | None = None,
        task_names: Sequence[str] | None = None,
        export: Callable[[Genome], str | None] | None = None,
        progress: ProgressFn | None = None,
        plot: Callable[[RunStore, list[dict[str, Any]]], None] | None = None,
        seeding: dict[str, Any] | None = None,
    ) -> None:
        if executor is None:
            if materialiser is None or tasks is None:
                raise ValueError("give either an executor or a materialiser, engine and tasks")
            executor = SerialExecutor(materialiser, engine, tasks)
        names = list(task_names) if task_names is not None else [t.name for t in tasks or []]
        if len(names) < 2:
            raise CycleQDError("CycleQD needs at least two tasks (one archive per task)")
        self.basis = basis
        self.executor = executor
        self.task_names = names
        self.task_experts = list(task_experts)
        self.search = search
        self.seed = seed
        self.bcs = list(bcs)
        self.constraints = list(constraints)
        self.combine: Combine = combine
        self.combine_density = combine_density
        self.store = store
        self.export = export
        self.progress = progress or (lambda event: None)
        self.plot = plot
        self.seeding = seeding
        self.archives: list[TaskArchive] = []
        self.emitters: CMAMEEmitters | None = None  # search.emitter: cma_me
        self.state: dict[str, Any] = {}
        self._in_flight: dict[str, tuple[int, dict[str, Any], float]] = {}

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, genome: Genome, *, records: bool = False) -> Evaluation:
        """Score one genome on every task (only while no child is in flight)."""
        if self._in_flight:
            raise RuntimeError("evaluate() needs an idle executor")
        self.executor.submit("single", genome, records=records)
        return self.executor.next_result()

    # -- phases ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume) to completion; returns the summary."""
        state = self.store.load_state()
        if state is None or state.get("phase") == "seeding":
            state = self._seed()
        self._restore(state)
        done = int(self.state["generations_done"])
        self.store.repair_metrics(done)
        self.store.prune_individuals(self._referenced())
        self._search()
        if self.state["phase"] != "done":
            self._final()
        summary = self.summary()
        self.store.write_summary(summary)
        if self.plot is not None:
            self.plot(self.store, [a.to_json() for a in self.archives])
        return summary

    def _seed(self) -> dict[str, Any]:
        """Evaluate every expert on every task, fix the BC ranges, seed all archives.

        With constraints, the base model is scored too: its constraint scores set the floors.
        The experts seed the archives whatever their constraint scores (an archive must start
        from something); ``summary.json`` names any expert below a floor.
        """
        expert_scores: dict[str, dict[str, float]] = {}
        for e, name in enumerate(self.basis.experts):
            genome = expert_genome(self.basis, e)
            self.store.save_individual(f"expert-{name}", genome)
            if self.seeding is None:
                self.executor.submit(name, genome)
        if self.seeding is not None:
            expert_scores = {n: dict(self.seeding["expert_scores"][n]) for n in self.basis.experts}
            if self.constraints:
                expert_scores[_BASE] = dict(self.seeding["base_scores"])
            for e, name in enumerate(expert_scores):
                who = "base model" if name == _BASE else name
                self.progress({"phase": "seeding", "expert": who, "index": e, "shared": True})
        else:
            if self.constraints:
                self.executor.submit(_BASE, base_genome(self.basis))
            for e in range(len(self.basis.experts) + bool(self.constraints)):
                result = self.executor.next_result()
                who = "base model" if result.key == _BASE else result.key
                self.progress({"phase": "seeding", "expert": who, "index": e})
                expert_scores[result.key] = result.scores
        base_scores = expert_scores.pop(_BASE, None)
        floors = (
            {name: base_scores[name] - drop for name, drop in self.constraints}
            if base_scores is not None
            else {}
        )
        expert_scores = {name: expert_scores[name] for name in self.basis.experts}
        ranges: dict[str, list[float]] = {}
        bcs = self.bcs or [BCConfig() for _ in self.task_names]
        for bc, task in zip(bcs, self.task_names, strict=True):
            spec = bc.range
            if spec == "auto":
                spec = auto_range([s[task] for s in expert_scores.values()])
            ranges[task] = [float(spec[0]), float(spec[1])]
        bins = {task: bc.bins for bc, task in zip(bcs, self.task_names, strict=True)}
        archives = []
        for task in self.task_names:
            bc_tasks = [t for t in self.task_names if t != task]
            archive = TaskArchive(
                task=task,
                bc_tasks=bc_tasks,
                ranges=[tuple(ranges[t]) for t in bc_tasks],
                bins=[bins[t] for t in bc_tasks],
            )
            for name, scores in expert_scores.items():
                archive.add(f"expert-{name}", scores)
            archives.append(archive.to_json())
        scores = {f"expert-{n}": s for n, s in expert_scores.items()}
        state = {
            "phase": "search",
            "basis": self.basis.fingerprint,
            "tasks": self.task_names,
            "experts": self.basis.experts,
            "expert_scores": expert_scores,
            "basis_kind": self.basis.kind,
            "basis_fidelity": self.basis.fidelity,
            "basis_ranks": self.basis.ranks,
            "bc_ranges": ranges,
            "base_scores": base_scores,
            "constraint_floors": floors,
            "rejected": 0,
            "generations_done": 0,
            "next_generation": 0,
            "in_flight": [],
            "archives": archives,
            "scores": scores,
            "final": None,
        }
        self.store.commit(state)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("tasks") != self.task_names or state.get("experts") != self.basis.experts:
            raise CycleQDError(
                f"{self.store.state_path}: the run was made with tasks {state.get('tasks')} and "
                f"experts {state.get('experts')}, the config now has {self.task_names} and "
                f"{self.basis.experts}"
            )
        if self.basis.fingerprint and state.get("basis") != self.basis.fingerprint:
            raise CycleQDError(
                f"{self.store.state_path}: the base or expert checkpoints changed since this run "
                "started (their content hash differs); resume needs the same checkpoints"
            )
        try:
            self.archives = [TaskArchive.from_json(a) for a in state["archives"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CycleQDError(f"{self.store.state_path}: corrupted archives ({exc})") from exc
        self.state = state
        if self.search.emitter.kind == "cma_me":
            self.emitters = CMAMEEmitters(
                self.search.emitter,
                GroupGenome(self.basis, self.search.emitter.groups),
                self.archives,
                self.task_experts,
                state["expert_scores"],
                self.seed,
            )
            if state.get("emitters"):
                self.emitters.restore(state["emitters"])
        for individual in sorted(self._referenced() - {"final"}):
            self.store.load_individual(individual)  # a damaged genome is named now, not mid-run

    def _referenced(self) -> set[str]:
        keep = {e.id for a in self.archives for e in a.elites()}
        keep |= {f"expert-{n}" for n in self.basis.experts}
        keep |= set(self._in_flight)
        if self.state.get("final"):
            keep.add("final")
        return keep

    def _search(self) -> None:
        """Keep the executor full until every generation has been evaluated and inserted."""
        total = self.search.generations
        next_generation = int(self.state.get("next_generation", self.state["generations_done"]))
        redo = deque(sorted(int(g) for g in self.state.get("in_flight", []) if int(g) < total))
        while redo or self._in_flight or next_generation < total:
            while len(self._in_flight) < self.executor.capacity:
                if redo:
                    generation = redo.popleft()
                elif next_generation < total:
                    generation, next_generation = next_generation, next_generation + 1
                else:
                    break
                bred = self._breed(generation)
                if bred is None:  # its emitter's batch is out, waiting for children in flight
                    if not self._in_flight:
                        raise RuntimeError(f"generation {generation}: nothing to wait for")
                    redo.appendleft(generation)  # the next one bred, whichever list it came from
                    break
                child_id, child, meta = bred
                self._in_flight[child_id] = (generation, meta, time.perf_counter())
                self.executor.submit(child_id, child)
            result = self.executor.next_result()
            generation, meta, started = self._in_flight.pop(result.key)
            self.state["next_generation"] = next_generation
            self.state["in_flight"] = sorted(
                [g for g, _, _ in self._in_flight.values()] + list(redo)
            )
            if result.path:
                meta = {**meta, "evaluation": result.path}
            self._insert(generation, result.key, result.scores, meta, started)

    def _breed(self, generation: int) -> tuple[str, Genome, dict[str, Any]] | None:
        """Sample two parents from archive ``generation mod K``, cross them over, mutate; or
        take the child of that archive's emitter (None: it waits for its batch's scores)."""
        s = self.search
        q = generation % len(self.task_names)
        archive = self.archives[q]
        sampling_rng, operator_rng = generation_rngs(self.seed, generation)
        if self.emitters is not None:
            return self._emit(generation, q, operator_rng)
        p1, p2 = SAMPLERS.get(s.sampler.kind).fn(archive.elites(), sampling_rng, s.sampler.params)
        ctx = Breeding(basis=self.basis, expert=self.task_experts[q])
        child, weights = CROSSOVERS.get(s.crossover.kind).fn(
            self.store.load_individual(p1.id),
            self.store.load_individual(p2.id),
            operator_rng,
            s.crossover.params,
            ctx,
        )
        child = MUTATIONS.get(s.mutation.kind).fn(child, operator_rng, s.mutation.params, ctx)
        child_id = f"g{generation:06d}"
        self.store.save_individual(child_id, child)
        meta = {
            "task": self.task_names[q],
            "parents": [p1.id, p2.id],
            "crossover_weights": weights.get("model", None),
        }
        return child_id, child, meta

    def _emit(
        self, generation: int, q: int, operator_rng: torch.Generator
    ) -> tuple[str, Genome, dict[str, Any]] | None:
        """The child archive ``q``'s CMA-ME emitter proposes (mutated with ``mutate``)."""
        assert self.emitters is not None
        proposed = self.emitters.propose(generation)
        if proposed is None:
            return None
        solution, where = proposed
        child = self.emitters.genome(solution)
        s = self.search
        if s.emitter.mutate:
            ctx = Breeding(basis=self.basis, expert=self.task_experts[q])
            child = MUTATIONS.get(s.mutation.kind).fn(child, operator_rng, s.mutation.params, ctx)
        child_id = f"g{generation:06d}"
        self.store.save_individual(child_id, child)
        meta = {
            "task": self.task_names[q],
            "emitter": where,
            "solution": [round(float(x), 6) for x in solution],
        }
        return child_id, child, meta

    def _insert(
        self,
        generation: int,
        child_id: str,
        scores: dict[str, float],
        meta: dict[str, Any],
        started: float,
    ) -> None:
        """Put a scored child into every archive it wins; log it; commit the run directory."""
        violated = self._violations(scores)
        if violated:
            inserted = {a.task: 0 for a in self.archives}
            meta = {**meta, "rejected": violated}
            self.state["rejected"] = int(self.state.get("rejected", 0)) + 1
        else:
            inserted = {a.task: a.add(child_id, scores) for a in self.archives}
        if self.emitters is not None:
            self.emitters.record(generation, scores, rejected=bool(violated))
            self.state["emitters"] = self.emitters.to_state()
            # readable beside the pickled state: summary.json reports them
            self.state["emitter_stats"] = dict(
                zip((a.task for a in self.archives), self.emitters.stats(), strict=True)
            )
        stats = {a.task: a.stats() for a in self.archives}
        self.state["scores"][child_id] = scores
        line = {
            "generation": generation,
            **meta,
            "child": child_id,
            "scores": scores,
            "inserted": inserted,
            "best_quality": {t: st["best_quality"] for t, st in stats.items()},
            "qd_score": {t: st["qd_score"] for t, st in stats.items()},
            "coverage": {t: st["coverage"] for t, st in stats.items()},
            "seconds": round(time.perf_counter() - started, 4),
        }
        self.store.append_metrics(line)
        done = int(self.state["generations_done"]) + 1
        self.state["generations_done"] = done
        self.state["archives"] = [a.to_json() for a in self.archives]
        keep = self._referenced()
        self.state["scores"] = {k: v for k, v in self.state["scores"].items() if k in keep}
        self.store.commit(self.state)
        self.store.prune_individuals(keep)
        self.progress({"phase": "search", "done": done, **line})
        every = self.search.plot_every
        if every and self.plot is not None and done % every == 0:
            self.plot(self.store, [a.to_json() for a in self.archives])

    def _violations(self, scores: dict[str, float]) -> list[str]:
        """The constraints whose floor ``scores`` fall below (none without constraints)."""
        return _below(scores, self.state.get("constraint_floors") or {})

    def _final(self) -> None:
        """Merge each archive's best elite (the ``final_merge`` operator); evaluate.

        With ``final_model: best_of`` an archived individual whose mean validation score beats
        the merge's is the final model instead: every elite was already scored on every task, so
        the choice costs nothing and still never looks at test data. Under constraints the
        choice is among those that keep every floor (the merge of elites can fall below one);
        the merge stays only when nothing does.
        """
        self.progress({"phase": "final"})
        bests = [a.best() for a in self.archives]
        merge = self.search.final_merge
        genome, beta = FINAL_MERGES.get(merge.kind).fn(
            bests,
            merge.params,
            Finishing(
                basis=self.basis,
                task_experts=self.task_experts,
                load=self.store.load_individual,
                combine=self.combine,
                combine_density=self.combine_density,
            ),
        )
        result = self.evaluate(genome, records=True)
        scores, chosen = result.scores, "merge"
        if self.search.final_model == "best_of":
            archived = {e.id for a in self.archives for e in a.elites()}
            candidates = sorted(
                (i, sc)
                for i, sc in self.state["scores"].items()
                if i in archived and not self._violations(sc)
            )
            mean = self._task_mean
            if candidates:
                best_id, best_scores = max(candidates, key=lambda c: mean(c[1]))
                if self._violations(scores) or mean(best_scores) > mean(scores):
                    genome = self.store.load_individual(best_id)
                    scores, chosen = best_scores, best_id
        self.store.save_individual("final", genome)
        model_path = self.export(genome) if self.export is not None else None
        self.store.write_json("final/records.json", result.records)
        self.state["final"] = {
            "elites": [b.id for b in bests],
            "merge": merge.kind,
            "beta": beta,
            "merge_scores": result.scores,
            "chosen": chosen,
            "scores": scores,
            "violations": self._violations(scores),
            "model": model_path,
        }
        self.state["phase"] = "done"
        self.store.commit(self.state)

    def _task_mean(self, scores: dict[str, float]) -> float:
        """Mean over the archives' tasks (constraints are floors, not part of the quality)."""
        return sum(scores[t] for t in self.task_names) / len(self.task_names)

    # -- reporting -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return summarise(self.state, self.archives)


def summarise(state: dict[str, Any], archives: Sequence[TaskArchive]) -> dict[str, Any]:
    """``summary.json``: progress, best quality per task, QD statistics, the final model."""
    best: dict[str, dict[str, Any]] = {}
    for a in archives:
        elite = a.best()
        best[a.task] = {"quality": elite.quality, "individual": elite.id}
    return {
        "generations_done": state["generations_done"],
        "phase": state["phase"],
        "expert_scores": state["expert_scores"],
        "basis_fidelity": state.get("basis_fidelity", {}),
        "bc_ranges": state["bc_ranges"],
        "best_quality": {t: b["quality"] for t, b in best.items()},
        "best_individual": {t: b["individual"] for t, b in best.items()},
        "archives": {
            a.task: {k: v for k, v in a.stats().items() if k != "best_quality"} for a in archives
        },
        "final": state.get("final"),
        **_constraint_summary(state),
        # search.emitter: cma_me: per archive's emitter, CMA-ES iterations and restarts
        **({"emitters": state["emitter_stats"]} if state.get("emitter_stats") else {}),
    }


def _constraint_summary(state: dict[str, Any]) -> dict[str, Any]:
    """Floors, the base's scores, experts under a floor, and how many children were rejected."""
    floors: dict[str, float] = state.get("constraint_floors") or {}
    if not floors:
        return {}
    return {
        "constraints": {
            name: {
                "base": state["base_scores"][name],
                "floor": floor,
                "experts_below": [
                    e for e, sc in state["expert_scores"].items() if _below(sc, {name: floor})
                ],
            }
            for name, floor in floors.items()
        },
        "base_scores": state["base_scores"],
        "rejected": int(state.get("rejected", 0)),
    }


def _below(scores: dict[str, float], floors: dict[str, float]) -> list[str]:
    """Names of the ``floors`` that ``scores`` fall below (rounding noise aside)."""
    return [name for name, floor in floors.items() if scores[name] < floor - 1e-12]


_BASE = "\0base"  # the base model's key while seeding (no expert can have this name)
