"""Content hashing of files and folders, for every key that decides whether work is reused.

One home so that the run keys (:mod:`cycleqd.keys`), the expert cache (:mod:`cycleqd.train.cache`)
and the basis cache (:mod:`cycleqd.merging.sources`) hash bytes the same way: content and
relative names, never paths or modification times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def hash_file(h: Any, path: Path) -> None:
    """Feed ``path``'s bytes into the hash state ``h``."""
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


def hash_tree(h: Any, root: Path, pattern: str) -> None:
    """Every file under ``root`` matching ``pattern``: its relative name, then its bytes."""
    root = Path(root)
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        hash_file(h, path)
