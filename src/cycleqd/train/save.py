"""Writing an expert: a standard Hugging Face directory, atomically, in the base's dtype.

The directory is written under a temporary name beside ``out`` and renamed into place only when
complete (``training.json`` included), so an interrupted run never leaves something that looks
like a finished expert: the cache check reads ``training.json``, which exists only in finished
directories. Training happens in float32; weights are cast back to the base checkpoint's dtype
so the expert matches its base tensor for tensor, as the merging layer expects.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

TRAINING_FILE = "training.json"


def read_training_record(out: Path) -> dict[str, Any] | None:
    """``out/training.json`` if it exists and parses, else None."""
    try:
        record = json.loads((Path(out) / TRAINING_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@contextmanager
def _atomically(out: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``out`` to fill, renamed to ``out`` when the block ends."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def _write_rest(folder: Path, tokenizer: Any, record: dict[str, Any]) -> None:
    """The tokenizer (with its chat template) and ``training.json``, last: a folder with the
    record is a finished one."""
    tokenizer.save_pretrained(folder)
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")


def save_expert(
    model: Any, tokenizer: Any, out: Path, dtype: torch.dtype, record: dict[str, Any]
) -> None:
    """Weights (safetensors), config, generation config, tokenizer + chat template, record."""
    with _atomically(out) as tmp:
        model.to("cpu", dtype)
        model.config.dtype = dtype
        model.save_pretrained(tmp, safe_serialization=True)
        _write_rest(tmp, tokenizer, record)


def save_adapter(model: Any, tokenizer: Any, out: Path, base: Path, record: dict[str, Any]) -> None:
    """A peft LoRA adapter directory (factors, ``adapter_config.json`` naming ``base`` by its
    absolute path), tokenizer and record, written atomically like :func:`save_expert`.

    Naming the base by path is what lets ``cycleqd run``, ``eval`` and ``merge`` take the
    directory as an expert with nothing converted by hand; nothing is ever downloaded.
    """
    with _atomically(out) as tmp:
        model.to("cpu")
        for config in model.peft_config.values():
            config.base_model_name_or_path = str(Path(base).resolve())
        model.save_pretrained(tmp, safe_serialization=True)
        _write_rest(tmp, tokenizer, record)
