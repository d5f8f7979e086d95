"""Evaluation on a pool of Ray actors, each with a resident engine and its task environments.

The driver (the main process) keeps the archives and breeds genomes; actors receive genomes,
never weights, and materialise them into their own resident model. The expert bases go into the
object store once and every actor on a node reads them from there. An actor that dies while
evaluating (a crash, an OOM kill, a lost node) is replaced and its child is evaluated again, so a
run loses nothing; the driver itself resumes from the run directory like a serial run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cycleqd.config import RunConfig
from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Genome
from cycleqd.search.executors.base import Evaluation

# Ray puts unix sockets under its temp dir; their paths must stay below the kernel's 107 bytes.
_MAX_TEMP_DIR = 40


class EvalWorker:
    """The body of one Ray actor: a :class:`~cycleqd.search.session.Session` with an engine."""

    def __init__(self, config_json: str, basis: ExpertBasis) -> None:
        from cycleqd.search.session import Session

        self.session = Session(RunConfig.model_validate_json(config_json), basis=basis)
        self.group: Any = None

    def evaluate(
        self, genomes: list[Genome], records: list[bool]
    ) -> list[tuple[dict[str, float], dict[str, dict[str, Any]] | None, str]]:
        """Scores of a group of genomes (shared forward passes where they pay), in order."""
        from cycleqd.search.executors.serial import GroupEvaluator, records_of

        if self.group is None:
            s = self.session
            mode = s.config.executor.population
            self.group = GroupEvaluator(s.materialiser, s.engine, s.tasks, mode=mode)
        results = self.group.evaluate(genomes)
        return [
            ({name: r.quality for name, r in res.items()}, records_of(res) if want else None, path)
            for res, want, path in zip(results, records, self.group.last_paths, strict=True)
        ]

    def export(self, genome: Genome, out_dir: str) -> str:
        return self.session.export_genome(genome, Path(out_dir))

    def pid(self) -> int:
        return os.getpid()


def ray_temp_dir(run_dir: Path, configured: Path | None) -> Path:
    """Ray's session files: the configured place, else ``ray/`` in the run directory.

    When that path is too long for Ray's unix sockets, a short folder in the system temp dir named
    after the run directory is used instead (never the user's home).
    """
    if configured is not None:
        return configured
    preferred = run_dir.resolve() / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR:
        return preferred
    digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"cqd-ray-{digest}"


def start_ray(address: str | None, temp_dir: Path) -> bool:
    """Connect to ``address``, or start a local Ray with its files in ``temp_dir``.

    Returns whether this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": True,
        "logging_level": "warning",
    }
    # Actors import cycleqd from wherever the driver does (an editable install or a checkout).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if address:
        ray.init(address=address, **common)
        return True
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(_temp_dir=str(temp_dir), **common)
    return True


class RayExecutor:
    """A steady-state pool: up to ``in_flight`` children evaluating on ``actors`` actors."""

    def __init__(
        self,
        config: RunConfig,
        basis: ExpertBasis,
        run_dir: Path,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise CycleQDError(
                "executor.kind: ray needs the ray package (pip install 'cycleqd[ray]')"
            ) from exc
        self._ray = ray
        ex = config.executor
        self.progress = progress or (lambda event: None)
        self.temp_dir = ray_temp_dir(run_dir, ex.temp_dir)
        self._started = start_ray(ex.ray_address, self.temp_dir)
        self._check_gpus(ex.actors, ex.actor_gpus)
        self._actor_cls = ray.remote(num_cpus=ex.actor_cpus, num_gpus=ex.actor_gpus)(EvalWorker)
        self._config_json = config.model_dump_json()
        self._basis_ref = ray.put(basis)
        self._n_actors = ex.actors
        self._per_actor = ex.children_per_batch
        self._capacity = ex.in_flight or ex.actors * ex.children_per_batch
        self.actors = [self._new_actor() for _ in range(ex.actors)]
        self._idle: deque[Any] = deque(self.actors)
        self._queue: deque[tuple[str, Genome, bool]] = deque()
        self._pending: dict[Any, tuple[list[tuple[str, Genome, bool]], Any]] = {}
        self._done: deque[Evaluation] = deque()
        self.replaced = 0
        self._deaths_in_a_row = 0

    def _check_gpus(self, actors: int, per_actor: float) -> None:
        """Refuse at start what Ray would otherwise leave pending for ever: actors asking for
        more GPUs than the cluster has."""
        need = actors * per_actor
        have = float(self._ray.cluster_resources().get("GPU", 0.0))
        if need > have:
            if self._started:
                self._ray.shutdown()
            raise CycleQDError(
                f"executor: {actors} actors x actor_gpus {per_actor:g} need {need:g} GPUs; "
                f"the Ray cluster has {have:g}"
            )

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self._config_json, self._basis_ref)

    @property
    def capacity(self) -> int:
        return self._capacity

    def actor_pids(self) -> list[int]:
        """Process ids of the live actors (for monitoring and fault-injection tests)."""
        return self._ray.get([a.pid.remote() for a in self.actors])

    def submit(self, key: str, genome: Genome, *, records: bool = False) -> None:
        # dispatched when a result is awaited: the loop submits a full load first, so every idle
        # actor gets a whole group rather than the first child alone
        self._queue.append((key, genome, records))

    def _dispatch(self) -> None:
        """Hand each idle actor a group of up to ``children_per_batch`` queued children."""
        while self._queue and self._idle:
            n = min(len(self._queue), self._per_actor)
            group = [self._queue.popleft() for _ in range(n)]
            actor = self._idle.popleft()
            ref = actor.evaluate.remote([g for _, g, _ in group], [r for _, _, r in group])
            self._pending[ref] = (group, actor)

    def next_result(self) -> Evaluation:
        ray = self._ray
        while not self._done:
            self._dispatch()
            if not self._pending:
                raise RuntimeError("next_result() with nothing submitted")
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            group, actor = self._pending.pop(ready[0])
            key = ", ".join(k for k, _, _ in group)
            try:
                answers = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                self._idle.append(actor)
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                if isinstance(cause, CycleQDError):
                    raise CycleQDError(str(cause)) from exc
                raise CycleQDError(f"evaluation of {key} failed on a Ray actor: {cause!r}") from exc
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                self._replace(actor, key, exc)
                self._queue.extendleft(reversed(group))
                continue
            self._deaths_in_a_row = 0
            self._idle.append(actor)
            for (k, _, _), (scores, recs, path) in zip(group, answers, strict=True):
                self._done.append(Evaluation(k, scores, recs, path))
        return self._done.popleft()

    def _replace(self, dead: Any, key: str, exc: BaseException) -> None:
        """Swap a dead actor for a fresh one; give up when actors die faster than they work."""
        self._deaths_in_a_row += 1
        if self._deaths_in_a_row > 2 * self._n_actors + 1:
            raise CycleQDError(
                f"Ray actors keep dying before finishing an evaluation "
                f"({self._deaths_in_a_row} in a row); last error: {exc}"
            ) from exc
        self.actors.remove(dead)
        with contextlib.suppress(Exception):  # already gone is fine
            self._ray.kill(dead, no_restart=True)
        fresh = self._new_actor()
        self.actors.append(fresh)
        self._idle.append(fresh)
        self.replaced += 1
        self.progress({"phase": "actor_replaced", "child": key, "replaced": self.replaced})

    def export(self, genome: Genome, out_dir: Path) -> str:
        actor = self.actors[0]
        return self._ray.get(actor.export.remote(genome, str(out_dir)))

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # shutting down anyway
                self._ray.kill(actor, no_restart=True)
        self.actors = []
        self._pending.clear()
        self._done.clear()
        self._queue.clear()
        self._idle.clear()
        if self._started:
            self._ray.shutdown()
            self._started = False
