"""The demo's inputs for benchmarks: SmolLM2, the suites' validation splits and the LoRA experts.

Shared by the benchmarks that measure the search on what ``make demo`` searches on. Experts
already in the demo's cache are used as they are (their cache key also hashes the task code,
which a benchmark does not need to match); missing ones are trained and cached as the demo would.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def validation_config(
    out: Path,
    *,
    preset: str = "cpu",
    n_val: int | None = None,
    dtype: str = "auto",
    seed: int = 0,
    basis_kind: str = "svd",
    experts_cache: Path | None = None,
    train_lr: float | None = None,
    anchor_weight: float | None = None,
    train_epochs: int | None = None,
) -> tuple[Any, Any]:
    """A run config over the demo's validation splits (written under ``out``) and the preset."""
    from cycleqd.config import load_config
    from cycleqd.demo.pipeline import Demo, DemoSettings
    from cycleqd.demo.presets import PRESETS
    from cycleqd.demo.skills import SKILLS

    chosen = PRESETS[preset]
    if n_val is not None:
        chosen = dataclasses.replace(chosen, n_val=n_val)
    if train_lr is not None:
        chosen = dataclasses.replace(chosen, train_lr=train_lr)
    if anchor_weight is not None:
        chosen = dataclasses.replace(chosen, anchor_weight=anchor_weight)
    if train_epochs is not None:
        chosen = dataclasses.replace(chosen, train_epochs=train_epochs)
    settings = DemoSettings(out=out, preset=chosen, engine_dtype=dtype, experts_cache=experts_cache)
    demo = Demo(settings, say=say)
    base = demo.model()
    data = demo.data()
    cached = {skill: demo._expert_dir(f"expert-{skill}") for skill in SKILLS}
    if all((d / "config.json").is_file() for d in cached.values()):
        experts = cached
    else:
        experts = demo.experts(base, data)
    config = load_config(
        data={
            "seed": seed,
            "base_model": str(base),
            "experts": [{"name": k, "path": str(v)} for k, v in experts.items()],
            "tasks": [demo._task(s, data[s]["validation"]) for s in SKILLS],
            "engine": demo._engine(),
            "basis": {"kind": basis_kind},
        }
    )
    return config, chosen
