"""``cycleqd eval``: score one model on a set of tasks, keep every transcript.

The same task objects the search uses score the model here, so a number in a results file means
exactly what the archive's quality means. Tasks come from a YAML file (a ``tasks:`` list like a
run config's, optionally an ``engine:`` section; a run config itself works) or from shorthand
``TYPE:DATA`` specs such as ``dbbench:data/dev.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cycleqd.config import (
    EngineConfig,
    TaskConfig,
    format_validation_error,
    resolve_task_paths,
)
from cycleqd.errors import CycleQDError
from cycleqd.search.store import atomic_write_text

if TYPE_CHECKING:
    from cycleqd.models.engines import EngineSlot


class EvalConfig(BaseModel):
    """The part of a config that evaluation needs."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskConfig] = Field(min_length=1)
    engine: EngineConfig = EngineConfig()


def load_eval_config(
    tasks_file: Path | None, specs: list[str], limit: int | None = None
) -> EvalConfig:
    """Tasks from a YAML file and/or ``TYPE:DATA`` specs; ``limit`` caps every task's samples."""
    entries: list[dict[str, Any]] = []
    engine: dict[str, Any] = {}
    if tasks_file is not None:
        if not tasks_file.is_file():
            raise CycleQDError(f"tasks file not found: {tasks_file}")
        try:
            raw = yaml.safe_load(tasks_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise CycleQDError(f"{tasks_file}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
            raise CycleQDError(f"{tasks_file}: expected a mapping with a 'tasks' list")
        for entry in raw["tasks"]:
            if isinstance(entry, dict) and isinstance(entry.get("params"), dict):
                resolve_task_paths(entry["params"], tasks_file.parent)
            entries.append(entry)
        engine = raw.get("engine") or {}
    for spec in specs:
        type_name, sep, data = spec.partition(":")
        if not sep or not type_name or not data:
            raise CycleQDError(f"--task {spec!r}: expected TYPE:DATA, e.g. dbbench:dev.jsonl")
        name = type_name
        taken = {e.get("name") for e in entries if isinstance(e, dict)}
        k = 2
        while name in taken:
            name, k = f"{type_name}-{k}", k + 1
        entries.append({"name": name, "type": type_name, "params": {"data": data}})
        resolve_task_paths(entries[-1]["params"], Path.cwd())
    if limit is not None:
        for entry in entries:
            if isinstance(entry, dict):
                entry.setdefault("params", {})["limit"] = limit
    try:
        return EvalConfig.model_validate({"tasks": entries, "engine": engine})
    except ValidationError as err:
        raise CycleQDError(f"config error: {format_validation_error(err)}") from err


def evaluation_key(model_dir: Path, config: EvalConfig) -> str:
    """A hex digest of everything that decides a model's scores: equal keys, equal results.

    It covers the model directory's files (content), the tasks and engine settings, the content
    of every file or folder a task parameter names (data, scripts) and the source code of the
    tasks, the engine and the sandbox. Why: the demo scores the same unchanged baselines on the
    same test splits in every run; with this key a rerun reuses those results instead of
    spending most of its time re-decoding them.
    """
    from cycleqd.keys import hash_model, hash_source, hash_task_files

    h = hashlib.sha256(b"cycleqd-eval/1\0")
    hash_model(h, Path(model_dir))
    h.update(config.model_dump_json().encode())
    hash_task_files(h, config.tasks)
    hash_source(h, ("tasks", "models", "sandbox"))
    return h.hexdigest()


def evaluate_model(
    model_dir: Path,
    config: EvalConfig,
    out: Path,
    progress: Callable[[str], None] | None = None,
    *,
    reuse: bool = False,
    slot: EngineSlot | None = None,
) -> dict[str, Any]:
    """Score ``model_dir`` on every task; write ``out`` and one transcript JSONL per task.

    ``reuse``: when ``out`` already holds the results of the same :func:`evaluation_key` (same
    weights, tasks, data and code) and its transcripts, return them without evaluating; the
    report then says ``"reused": true``. ``slot``: an engine kept open across calls, which
    takes this model in place of its last one where it can (see
    :class:`~cycleqd.models.engines.EngineSlot`).
    """
    from cycleqd.models.engines import close_engine, open_engine
    from cycleqd.resources import release_memory
    from cycleqd.tasks import build_task

    emit = progress or (lambda message: None)
    if not any((Path(model_dir) / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise CycleQDError(
            f"{model_dir}: not a Hugging Face model or peft adapter directory "
            "(no config.json or adapter_config.json)"
        )
    key = evaluation_key(model_dir, config)
    if reuse and out.is_file():
        try:
            stored = json.loads(out.read_text())
        except ValueError:
            stored = {}
        tasks_done = stored.get("tasks", {}) if isinstance(stored, dict) else {}
        if (
            stored.get("key") == key
            and set(tasks_done) == {t.name for t in config.tasks}
            and all(Path(r.get("transcripts", "")).is_file() for r in tasks_done.values())
        ):
            emit("reusing results of the same weights, tasks, data and code")
            return {**stored, "reused": True}
    tasks = [build_task(t.name, t.type, t.params, f"tasks.{i}") for i, t in enumerate(config.tasks)]
    emit("loading model")
    settings = config.engine.model_dump()
    engine = open_engine(model_dir, **settings) if slot is None else slot.open(model_dir, settings)
    results: dict[str, Any] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for task in tasks:
            emit(f"task {task.name}")
            started = time.perf_counter()
            result = task.evaluate(engine)
            seconds = time.perf_counter() - started
            transcripts = out.with_name(f"{out.stem}.{task.name}.jsonl")
            atomic_write_text(
                transcripts, "".join(json.dumps(r, default=str) + "\n" for r in result.records)
            )
            results[task.name] = {
                "quality": result.quality,
                "samples": len(result.records),
                "seconds": round(seconds, 2),
                "transcripts": str(transcripts),
            }
            del result
            release_memory()  # the next task starts from what is in use, not this one's peak
    finally:
        if slot is None:  # opened here: its memory goes back now, not at exit
            close_engine(engine)
    report = {"model": str(model_dir), "key": key, "tasks": results}
    atomic_write_text(out, json.dumps(report, indent=2))
    return report
