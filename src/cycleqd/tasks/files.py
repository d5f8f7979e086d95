"""Reading the task data files users bring: one place for the file and line in every error.

Every benchmark format here is either JSON Lines (MBPP, HumanEval, DBBench, prompt/target files)
or a JSON list; the formats differ in their fields, not in how a broken file must be reported.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cycleqd.errors import CycleQDError


def require_file(path: Path, what: str) -> None:
    """``what`` names the format in the error, e.g. ``DBBench data file not found: ...``."""
    if not path.is_file():
        raise CycleQDError(f"{what} data file not found: {path}")


def read_text(path: Path, what: str) -> str:
    """The file's text (``.gz`` decompressed); unreadable or non-UTF-8 files name the path."""
    require_file(path, what)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise CycleQDError(f"{path}: cannot read ({exc})") from exc


def iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line, in order.

    Lines end at a line feed only: JSON strings may hold U+2028, U+0085 and other characters that
    ``str.splitlines`` would break a record at (Hugging Face ``datasets`` writes them raw).
    """
    for lineno, line in enumerate(read_text(path, what).split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as exc:
            raise CycleQDError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
