"""What kind of checkpoint a model directory holds, read from its files alone (no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cycleqd.errors import CycleQDError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def checkpoint_dtype(model_dir: Path) -> torch.dtype:
    """The dtype a checkpoint's ``config.json`` declares (float32 if none, or no config)."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return torch.float32
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return DTYPES.get(str(name), torch.float32)


def adapter_base(model_dir: Path) -> Path | None:
    """The base model directory of a peft adapter directory (None for a full model).

    Its ``adapter_config.json`` must name the base as a local directory (``cycleqd export
    --adapter`` writes it so); a hub name is an error, since nothing is downloaded.
    """
    config_file = Path(model_dir) / "adapter_config.json"
    if not config_file.is_file():
        return None
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except ValueError as exc:
        raise CycleQDError(f"{config_file}: not valid JSON ({exc})") from exc
    if not base or not (Path(base) / "config.json").is_file():
        raise CycleQDError(
            f"{config_file}: base_model_name_or_path {base!r} is not a local model directory; "
            "set it to the base model's directory"
        )
    return Path(base)
