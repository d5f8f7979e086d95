"""Expert training (``cycleqd train-expert``): supervised fine-tuning on gold task transcripts.

CycleQD merges experts fine-tuned from one base, one per skill; this package makes them from the
same tasks the search scores, with the conversations taken from the real environments.

The names below load on first use, so that reading :class:`TrainConfig` (the CLI builds its
``train-expert`` options from it) does not import the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "SourceReport": "cycleqd.train.expert",
    "TrainConfig": "cycleqd.train.config",
    "TrainReport": "cycleqd.train.expert",
    "TrainSource": "cycleqd.train.spec",
    "cache_key_for": "cycleqd.train.expert",
    "cached_expert": "cycleqd.train.expert",
    "expert_cache_key": "cycleqd.train.cache",
    "resolve_spec": "cycleqd.train.spec",
    "train_expert": "cycleqd.train.expert",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
