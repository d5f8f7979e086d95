"""Wiring a config into a search: checkpoints, bases, engine, tasks and the run directory.

This is the only module that knows both the config file and the concrete model engine; the loop
itself (``loop.py``) works on any model and any task.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from cycleqd.config import RunConfig, SearchConfig, dump_config, load_config
from cycleqd.errors import CycleQDError
from cycleqd.keys import hash_model, hash_source, hash_task_files
from cycleqd.merging.adapter_export import write_adapter
from cycleqd.models.engines import EngineSlot
from cycleqd.report.run import plot_run
from cycleqd.search.archive import TaskArchive
from cycleqd.search.executors import Executor, SerialExecutor
from cycleqd.search.executors.ray import RayExecutor
from cycleqd.search.loop import CycleQD, ProgressFn, summarise
from cycleqd.search.session import Session
from cycleqd.search.store import RunStore, atomic_write_text


def _executor(session: Session, store: RunStore, progress: ProgressFn | None) -> Executor:
    if session.config.executor.kind == "ray":
        return RayExecutor(session.config, session.basis, store.root, progress)
    ex = session.config.executor
    return SerialExecutor(
        session.materialiser,
        session.engine,
        session.tasks,
        session.export_genome,
        children_per_batch=ex.children_per_batch,
        population=ex.population,
    )


def _search(
    session: Session,
    store: RunStore,
    progress: ProgressFn | None,
    seeding: dict[str, Any] | None = None,
) -> dict[str, Any]:
    executor = _executor(session, store, progress)
    config = session.config
    try:
        search = CycleQD(
            basis=session.basis,
            executor=executor,
            task_names=session.task_names,
            task_experts=session.task_experts,
            search=config.search,
            seed=config.seed,
            bcs=[t.bc for t in config.tasks],
            constraints=[(c.name, c.max_drop) for c in config.constraints],
            combine=config.basis.combine,
            combine_density=config.basis.density,
            store=store,
            export=lambda genome: executor.export(genome, store.final_dir),
            progress=progress,
            plot=plot_run,
            seeding=seeding,
        )
        return search.run()
    finally:
        executor.close()
        session.close()


def _session(
    config: RunConfig, progress: ProgressFn | None, slot: EngineSlot | None = None
) -> Session:
    """The driver's session: with Ray, the engine and task environments live in the actors.
    ``slot``: the caller's engine, kept open after the run (see :class:`Session`)."""
    return Session(config, progress, engine=config.executor.kind == "serial", slot=slot)


def start_run(
    config: RunConfig,
    out: Path,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    key: str | None = None,
    seeding: dict[str, Any] | None = None,
    slot: EngineSlot | None = None,
) -> dict[str, Any]:
    """A new run in ``out``; refuses to touch an existing run directory without ``force``.

    ``key`` (:func:`run_key` of ``config``) is stored beside the config, so that
    :func:`start_or_resume_run` can later tell this run's inputs from another's. ``seeding``:
    the experts' scores of another run with the same seeding (:func:`shared_seeding`).
    ``slot``: the engine to score children in, the caller's to close.
    """
    store = RunStore(out)
    store.ensure_new(force=force)
    session = _session(config, progress, slot)  # validate everything before touching the directory
    store.create(dump_config(config), force=force)
    if key is not None:
        store.write_key(key)
    return _search(session, store, progress, seeding)


def _inputs_hash(config: RunConfig) -> Any:
    """The hash state over a run's files: base and expert models, task and constraint data, the
    package's source (the part of :func:`run_key` that reads disk, so it is done once per call
    site and copied for each config dump over the same paths)."""
    h = hashlib.sha256(b"cycleqd-run/2\0")
    for model in (config.base_model, *(e.path for e in config.experts)):
        hash_model(h, model)
    hash_task_files(h, [*config.tasks, *config.constraints])
    hash_source(h)
    return h


def _key(inputs: Any, config: RunConfig) -> str:
    h = inputs.copy()
    h.update(dump_config(config).encode())
    return h.hexdigest()


def run_key(config: RunConfig) -> str:
    """A hex digest of everything that decides a run's outcome: equal keys, equal runs.

    It covers the resolved config (seed included), the base model's and every expert's files,
    every task's and constraint's data files and the package's whole source. Why: a run is
    deterministic given these, so a run directory holding the same key holds this run, finished
    or interrupted.
    """
    return _key(_inputs_hash(config), config)


# The settings that only decide the final stage (which merge of the archives' best elites, or
# which elite, becomes the final model): nothing before it reads them.
FINAL_STAGE_SETTINGS = ("final_model", "final_merge")


def search_config(config: RunConfig) -> RunConfig:
    """``config`` with the final stage's settings at their defaults.

    Why: two runs whose search configs are equal (and whose models, data and code are the same)
    evaluate the same children into the same archives: the final stage runs after the last
    generation and draws nothing from the seed. So one finished search can serve several final
    stages, as the demo's ablation needs.
    """
    defaults = {
        k: SearchConfig.model_fields[k].get_default(call_default_factory=True)
        for k in FINAL_STAGE_SETTINGS
    }
    search = config.search.model_copy(update=defaults)
    return config.model_copy(update={"search": search})


RunStart = Literal["new", "seeded", "resumed", "reused", "derived", "extended"]


def finished_search(
    source: Path, config: RunConfig, *, require_key: bool = True, inputs: Any = None
) -> RunStore:
    """``source`` as a store, if its search is the one ``config`` asks for and it has finished.

    Raises :class:`CycleQDError` naming why not: not a run directory, generations still to go,
    another search (its config differs before the final stage), or models, data or code changed
    since it ran (its stored :func:`run_key` no longer matches). A run started by ``cycleqd run``
    stores no key (hashing a large run's models costs minutes), so for it that last check is
    skipped unless ``require_key``. ``inputs``: ``config``'s :func:`_inputs_hash` if the caller
    has it (equal search configs name the same files, so the source's key is checked over it).
    """
    store = RunStore(source)
    if not store.config_path.is_file():
        raise CycleQDError(f"{source}: not a cycleqd run directory (no config.yaml)")
    theirs = load_config(store.config_path)
    state = store.load_state()
    done = int((state or {}).get("generations_done", -1))
    if state is None or state.get("phase") not in ("search", "done"):
        raise CycleQDError(f"{source}: its search has not finished seeding")
    if done < theirs.search.generations:
        raise CycleQDError(
            f"{source}: {done} of {theirs.search.generations} generations done; "
            f"finish it first (cycleqd resume {source})"
        )
    if dump_config(search_config(theirs)) != dump_config(search_config(config)):
        raise CycleQDError(
            f"{source}: another search (its config differs from this one before the final "
            f"stage; only {', '.join('search.' + k for k in FINAL_STAGE_SETTINGS)} may differ)"
        )
    stored = store.read_key()
    if stored is None and not require_key:
        return store
    if stored != _key(inputs if inputs is not None else _inputs_hash(config), theirs):
        raise CycleQDError(
            f"{source}: its models, data or the package's code changed since it ran (its run "
            "key no longer matches), so its archives are not this search's"
        )
    return store


def _derive_run(
    source: RunStore,
    config: RunConfig,
    out: Path,
    key: str,
    progress: ProgressFn | None,
    slot: EngineSlot | None = None,
) -> dict[str, Any]:
    """A run in ``out`` whose search is ``source``'s, with ``config``'s own final stage.

    The archives, genomes and metrics are copied and the state is put back to the end of the
    search, so resuming it runs only the final stage (the merge is evaluated on validation once).
    """
    state = source.load_state()
    assert state is not None  # checked by finished_search
    state.pop("final", None)
    state.pop("format", None)
    state["phase"] = "search"
    store = RunStore(out)
    session = _session(config, progress, slot)  # validate all before touching the directory
    store.create(dump_config(config), force=True)
    shutil.copytree(
        source.root / "individuals",
        store.root / "individuals",
        ignore=shutil.ignore_patterns("final.safetensors", ".*"),
    )
    if source.metrics_path.is_file():
        shutil.copy2(source.metrics_path, store.metrics_path)
    store.commit(state)
    store.write_key(key)
    return _search(session, store, progress)


def derive_run(
    config: RunConfig,
    out: Path,
    source: Path,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """A new run in ``out`` that takes ``source``'s finished search and runs ``config``'s final
    stage on its archives (``cycleqd run --search-from``); errors say why ``source`` cannot serve.

    Why: trying another final merge or ``best_of`` on a finished search should cost one
    validation evaluation, not a new search.
    """
    inputs = _inputs_hash(config)
    found = finished_search(source, config, require_key=False, inputs=inputs)
    RunStore(out).ensure_new(force=force)
    if Path(out).resolve() == found.root.resolve():
        raise CycleQDError(f"{out}: is the source run itself; give another --out")
    return _derive_run(found, config, out, _key(inputs, config), progress)


def _one_in_flight(config: RunConfig) -> bool:
    """Whether the loop breeds each child only after the one before it returned.

    Then generation ``g`` sees exactly the archives of generations ``0..g-1``, however the run
    was cut into sittings, so a run extended from M to N generations is the N-generation run.
    With several children in flight it is not: the shorter run drained its pipeline at M.
    """
    ex = config.executor
    return ex.kind == "serial" and ex.children_per_batch == 1


def _with_generations(config: RunConfig, generations: int) -> RunConfig:
    search = config.search.model_copy(update={"generations": generations})
    return config.model_copy(update={"search": search})


def extend_run(run_dir: Path, generations: int, *, inputs: Any = None) -> RunConfig:
    """Raise the generation budget of the run in ``run_dir`` to ``generations``.

    A finished run goes back to its search phase (its final stage runs again after the new
    generations); nothing is evaluated here, :func:`resume_run` does the work. Why: the paper
    runs hundreds of generations; a user who finds a short search starved should pay only for
    the generations added, not for a new search.

    The stored run key follows the config when the extension is exactly the longer run (one
    child in flight, and the stored key was this run's), so the demo and ``--search-from`` can
    reuse it; otherwise it is removed, and the run is never mistaken for a fresh one. The writes
    are ordered so that a crash at any point leaves a run that resumes correctly: key removed,
    state reopened, config raised, new key written. ``inputs``: :func:`_inputs_hash` of the
    config if the caller has it (it hashes every model file).
    """
    store, config = open_run(run_dir)
    state = store.load_state()
    current = config.search.generations
    if generations < current:
        raise CycleQDError(
            f"{run_dir}: its budget is {current} generations; a run can be extended, not cut "
            f"(--generations {generations})"
        )
    if generations == current:
        return config
    if state is None or state.get("phase") == "seeding":
        raise CycleQDError(
            f"{run_dir}: has not finished seeding; resume it first (cycleqd resume {run_dir})"
        )
    stored = store.read_key()
    keep_key = stored is not None and _one_in_flight(config)
    if keep_key:
        inputs = inputs if inputs is not None else _inputs_hash(config)
        keep_key = stored == _key(inputs, config)
    store.key_path.unlink(missing_ok=True)
    if state.get("phase") == "done":
        state["phase"] = "search"
        state["final"] = None
        store.commit(state)
    extended = _with_generations(config, generations)
    atomic_write_text(store.config_path, dump_config(extended))
    if keep_key:
        store.write_key(_key(inputs, extended))
    return extended


def _past_seeding(store: RunStore) -> tuple[RunConfig, dict[str, Any]] | None:
    """The config and state of the run in ``store`` if it has finished seeding (None when it
    has not, or when either file is missing or unreadable: then it serves no other run)."""
    if not store.config_path.is_file():
        return None
    try:
        theirs = load_config(store.config_path)
        state = store.load_state()
    except (CycleQDError, OSError, ValueError):
        return None
    if state is None or state.get("phase") not in ("search", "done"):
        return None
    return theirs, state


def _shorter_run(store: RunStore, config: RunConfig, inputs: Any) -> bool:
    """Whether ``store`` holds this search with fewer generations, as :func:`extend_run` can
    make into exactly ``config``'s run (same inputs by its key, one child in flight)."""
    found = _past_seeding(store) if _one_in_flight(config) else None
    if found is None:
        return False
    theirs = found[0]
    fewer = theirs.search.generations < config.search.generations
    same = dump_config(_with_generations(theirs, config.search.generations)) == dump_config(config)
    return fewer and same and store.read_key() == _key(inputs, theirs)


def shared_seeding(source: Path, config: RunConfig, inputs: Any = None) -> dict[str, Any] | None:
    """The seeding scores of the run in ``source`` if ``config``'s seeding would repeat them.

    The seeding phase scores every expert (and, with constraints, the base) on every task; those
    scores depend on the models, tasks, constraints, basis, engine and executor, not on the seed
    or the search's operators and budget. So a run whose config differs from ``source``'s only
    in ``seed`` and ``search``, over unchanged files and code (``source``'s stored key matches),
    would evaluate the same scores again: on 2 CPU cores three experts cost about four minutes
    of each search of ``cycleqd demo --seeds`` and ``--ablation``. None when it would not.
    """
    store = RunStore(source)
    found = _past_seeding(store)
    if found is None:
        return None
    theirs, state = found
    outside = {"seed", "search"}
    if theirs.model_dump(mode="json", exclude=outside) != config.model_dump(
        mode="json", exclude=outside
    ):
        return None
    inputs = inputs if inputs is not None else _inputs_hash(config)
    if store.read_key() != _key(inputs, theirs):
        return None
    return {"expert_scores": state["expert_scores"], "base_scores": state.get("base_scores")}


def start_or_resume_run(
    config: RunConfig,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    announce: Callable[[RunStart], None] | None = None,
    share: Sequence[Path] = (),
    slot: EngineSlot | None = None,
) -> tuple[dict[str, Any], RunStart]:
    """Continue the run in ``out`` if it has ``config``'s :func:`run_key`, else start afresh.

    Returns the summary and how it was obtained: ``reused`` (that run had finished: nothing is
    evaluated again), ``resumed`` (it was interrupted: it goes on from its last committed
    generation), ``derived`` (a run in ``share`` had finished the same search, as
    :func:`finished_search` checks: its archives are copied and only the final stage runs) or
    ``extended`` (``out`` holds this search with fewer generations: it goes on from there, as
    :func:`extend_run` says), ``seeded`` (a new search whose experts' scores come from a run in
    ``share``, as :func:`shared_seeding` checks) or ``new`` (no run, another key, or an
    unreadable state: the directory is replaced);
    ``announce`` hears which before any work starts. Why: the demo's searches take most of its
    time; a rerun, a run restarted after a kill, a longer budget or an ablation of the final
    stage should not redo them, and a reused run does not even open its models (starting an
    engine was most of a rerun's time). ``slot``: an engine the caller keeps open across runs and
    evaluations (the demo's stages share one), left open.
    """
    inputs = _inputs_hash(config)
    key = _key(inputs, config)
    store = RunStore(out)
    if store.read_key() == key and store.config_path.is_file():
        try:
            state = store.load_state()
        except CycleQDError:
            state = None  # corrupted: start over below
        if state is not None:
            how: RunStart = "reused" if state.get("phase") == "done" else "resumed"
            if announce is not None:
                announce(how)
            if how == "reused":  # summarised from its state: no models, engine or tasks
                return report_run(out), how
            return resume_run(out, progress=progress, slot=slot), how
    if _shorter_run(store, config, inputs):
        if announce is not None:
            announce("extended")
        extend_run(out, config.search.generations, inputs=inputs)
        return resume_run(out, progress=progress, slot=slot), "extended"
    for source in share:
        if Path(source).resolve() == store.root.resolve():
            continue
        try:
            found = finished_search(source, config, inputs=inputs)
        except CycleQDError:
            continue  # not this search: try the next, or search afresh
        if announce is not None:
            announce("derived")
        return _derive_run(found, config, out, key, progress, slot), "derived"
    seeding = None
    for source in share:
        if Path(source).resolve() != store.root.resolve():
            seeding = shared_seeding(source, config, inputs)
            if seeding is not None:
                break
    how = "seeded" if seeding is not None else "new"
    if announce is not None:
        announce(how)
    summary = start_run(
        config, out, force=True, progress=progress, key=key, seeding=seeding, slot=slot
    )
    return summary, how


def open_run(run_dir: Path) -> tuple[RunStore, RunConfig]:
    store = RunStore(run_dir)
    if not store.root.is_dir():
        raise CycleQDError(f"run directory not found: {run_dir}")
    if not store.config_path.is_file():
        raise CycleQDError(
            f"{store.config_path}: missing; {run_dir} is not a cycleqd run directory"
        )
    return store, load_config(store.config_path)


def resume_run(
    run_dir: Path, *, progress: ProgressFn | None = None, slot: EngineSlot | None = None
) -> dict[str, Any]:
    """Continue a run from its last committed generation (``slot``: as :func:`start_run`)."""
    store, config = open_run(run_dir)
    store.load_state()  # fail early on a corrupted state file, before loading models
    return _search(_session(config, progress, slot), store, progress)


def _archives(store: RunStore) -> tuple[dict[str, Any], list[TaskArchive]]:
    state = store.load_state()
    if state is None:
        raise CycleQDError(f"{store.state_path}: missing; the run has not finished seeding")
    try:
        return state, [TaskArchive.from_json(a) for a in state["archives"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CycleQDError(f"{store.state_path}: corrupted archives ({exc})") from exc


def export_run(
    run_dir: Path,
    out: Path,
    *,
    best_of: str | None = None,
    final: bool = False,
    individual: str | None = None,
    adapter: bool = False,
    force: bool = False,
) -> Path:
    """Export the final model, the best elite of one task's archive or any stored individual,
    as a Hugging Face model directory or (``adapter``) as a peft LoRA adapter of the base."""
    if sum((best_of is not None, final, individual is not None)) != 1:
        raise CycleQDError("export needs exactly one of --best-of TASK, --final, --individual ID")
    store, config = open_run(run_dir)
    state, archives = _archives(store)
    if final:
        if not state.get("final"):
            raise CycleQDError(f"{run_dir}: the run has no final model yet; resume it first")
        chosen = "final"
    elif individual is not None:
        stored = sorted(p.stem for p in (store.root / "individuals").glob("*.safetensors"))
        if individual not in stored:
            raise CycleQDError(
                f"{run_dir}: no stored individual {individual!r} (stored: {', '.join(stored)})"
            )
        chosen = individual
    else:
        names = [a.task for a in archives]
        if best_of not in names:
            raise CycleQDError(f"no task named {best_of!r} in this run (tasks: {', '.join(names)})")
        chosen = archives[names.index(best_of)].best().id
    if out.exists() and any(out.iterdir()) and not force:
        raise CycleQDError(f"{out} already exists; use --force to overwrite it")
    genome = store.load_individual(chosen)
    if adapter:
        session = Session(config, engine=False)
        return write_adapter(
            session.basis, genome, config.base_model, out, combine=config.basis.combine
        )
    session = Session(config)
    try:
        session.export_genome(genome, out)
    finally:
        session.close()
    return out


def report_run(run_dir: Path) -> dict[str, Any]:
    """Re-draw the plots and rewrite ``summary.json`` from the stored state."""
    store, _ = open_run(run_dir)
    state, archives = _archives(store)
    summary = summarise(state, archives)
    store.write_summary(summary)
    plot_run(store, [a.to_json() for a in archives])
    return summary
