"""Content keys: digests of everything that decides a result, so unchanged work is reused.

Why: on a 2-core CPU the demo's stages take minutes to an hour each, and a rerun with the same
weights, data, settings and code gives the same result (every random choice flows from the seed,
and decoding is greedy). A stored result whose key equals the key of the work about to start is
that work's result; a changed byte anywhere in the inputs or the code changes the key.

Files are hashed by :mod:`cycleqd.hashing`, as the expert and basis caches hash them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cycleqd
from cycleqd.hashing import hash_file, hash_tree
from cycleqd.models.checkpoints import adapter_base

PACKAGE = Path(cycleqd.__file__).parent


class _Task(Protocol):
    name: str
    params: dict[str, Any]


def hash_model(h: Any, model: Path) -> None:
    """A model directory's top-level files (name and content), or a single model file.

    Markdown files (the model card) are left out: they cannot change a single output, and
    mergekit writes its card's list of source models in a different order from one process to
    the next, so hashing it made every re-merged baseline look like a new model.
    """
    model = Path(model)
    if model.is_file():
        h.update(model.name.encode() + b"\0")
        hash_file(h, model)
        return
    for path in sorted(p for p in model.iterdir() if p.is_file() and p.suffix != ".md"):
        h.update(path.name.encode() + b"\0")
        hash_file(h, path)
    base = adapter_base(model)  # an adapter's scores depend on its base model too
    if base is not None:
        h.update(b"adapter-of\0")
        hash_model(h, base)


def hash_task_files(h: Any, tasks: Iterable[_Task]) -> None:
    """The content of every file or folder a task parameter names (data, AgentBench scripts)."""
    for task in tasks:
        for key in sorted(task.params):
            value = task.params[key]
            path = Path(value) if isinstance(value, str) else None
            if path is not None and path.is_file():
                h.update(f"{task.name}.{key}\0".encode())
                hash_file(h, path)
                scripts = path.parent.parent / "scripts" / path.stem  # AgentBench OS layout
                if scripts.is_dir():
                    hash_tree(h, scripts, "*")
            elif path is not None and path.is_dir():
                h.update(f"{task.name}.{key}/\0".encode())
                hash_tree(h, path, "*")


def hash_source(h: Any, subpackages: Sequence[str] | None = None) -> None:
    """The package version and the source of ``subpackages`` (all of the package if None)."""
    h.update(cycleqd.__version__.encode())
    if subpackages is None:
        hash_tree(h, PACKAGE, "*.py")
        return
    for sub in subpackages:
        hash_tree(h, PACKAGE / sub, "*.py")


def models_digest(models: Sequence[Path]) -> str:
    """One digest of several model directories' files (content, in the given order)."""
    h = hashlib.sha256(b"cycleqd-models/1\0")
    for model in models:
        h.update(b"model\0")
        hash_model(h, Path(model))
    return h.hexdigest()


def merge_key(method: str, params: dict[str, Any], models: str) -> str:
    """A hex digest of everything that decides a mergekit merge's output.

    ``models`` is :func:`models_digest` of the base and the experts (hashed once for all of a
    run's merges). Also covered: the method and its parameters, mergekit's version and the
    source of cycleqd's merging layer. Why: the demo merges the same experts the same way in
    every run (two minutes on the CPU preset); an unchanged key means the merge already on disk
    is the one this run would write.
    """
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(b"cycleqd-merge/1\0")
    h.update(json.dumps([method, params, models], sort_keys=True, default=str).encode() + b"\0")
    try:
        h.update(version("mergekit").encode() + b"\0")
    except PackageNotFoundError:
        h.update(b"no-mergekit\0")
    hash_source(h, ("merging",))
    return h.hexdigest()
