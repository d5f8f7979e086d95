"""The expert cache key: identical inputs give an identical key, so training can be skipped.

The key covers everything that decides the weights: the base model's files (content, not path
or mtime), each training source (a suite's name, or a data file's content), the
hyperparameters, the package version and the source code of the training and task packages
(a changed prompt or protocol changes the conversations, hence the expert).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cycleqd
from cycleqd.hashing import hash_file, hash_tree
from cycleqd.train.spec import TrainSource

_PACKAGE = Path(cycleqd.__file__).parent
_CODE_DIRS = ("train", "tasks")


def code_fingerprint() -> str:
    """Hash of the package version and the training/task source code."""
    h = hashlib.sha256(cycleqd.__version__.encode())
    for sub in _CODE_DIRS:
        hash_tree(h, _PACKAGE / sub, "*.py")
    return h.hexdigest()


def expert_cache_key(
    base: Path,
    sources: Sequence[TrainSource],
    hyperparameters: Mapping[str, Any],
    anchors: Sequence[TrainSource] = (),
) -> str:
    """A hex digest identifying the expert these inputs would train."""
    h = hashlib.sha256(b"cycleqd-expert/1\0")
    base = Path(base)
    for path in sorted(p for p in base.iterdir() if p.is_file() and p.name != "training.json"):
        h.update(path.name.encode() + b"\0")
        hash_file(h, path)
    tagged = [("", s) for s in sources] + [("anchor:", s) for s in anchors]
    for tag, source in tagged:
        h.update(f"{tag}{source.kind}:{source.format}:{source.suite or ''}\0".encode())
        if source.path is not None:
            hash_file(h, source.path)
            scripts = source.path.parent.parent / "scripts" / source.path.stem
            if source.format == "agentbench-os" and scripts.is_dir():
                hash_tree(h, scripts, "*")
    h.update(json.dumps(dict(hyperparameters), sort_keys=True, default=str).encode())
    h.update(code_fingerprint().encode())
    return h.hexdigest()
