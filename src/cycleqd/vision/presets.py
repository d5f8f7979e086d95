"""Sizes of the vision demo. ``cpu`` is the 15-minute demo on 2 cores; ``mini`` is the test's.

The search settings are the paper's (elite sampling, model-wise linear crossover with N(1, 0.01)
weights, SVD mutation with w_max 0.1, softmax merge of the archives' best elites): the defaults of
:class:`~cycleqd.config.SearchConfig`. The variant search overrides them by config key path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cycleqd.configs import overlay
from cycleqd.errors import CycleQDError

#: The second search's operators (``preset.variant``): ``cycleqd/configs/vision/variant.yaml``,
#: run-config overrides of the ``search`` section; and its row name.
VARIANT: dict[str, Any] = overlay("vision/variant")
VARIANT_LABEL = "CycleQD (per-expert crossover, signed mutation, TIES final, best-of)"


@dataclass(frozen=True)
class VisionPreset:
    name: str
    image_size: int
    n_train: int  # training scenes per task (the base's and each expert's)
    n_val: int  # validation scenes per task: what the search selects on
    n_test: int  # held-out test scenes per task: the table
    base_steps: int
    expert_steps: int
    batch_size: int
    base_lr: float
    expert_lr: float
    generations: int
    bins: int  # per BC axis
    seed: int = 0
    # A second search with the language demo's operators (per-expert crossover, signed SVD
    # mutation, TIES final merge, best-of final model), reported beside the paper's: with fully
    # fine-tuned experts whose task vectors interfere, the paper's averaging crossover and
    # softmax final merge land on a plain average of the experts.
    variant: bool = True
    pair_methods: tuple[str, ...] = ("linear", "ties")  # merges of each pair of experts
    shown: int = 1  # test images per task in the masks picture
    # torch intra-op threads while the demo runs. The model is so small that splitting its ops
    # over threads costs more than it saves: one training step of the cpu preset took 0.09 s
    # on one thread and 0.49 s on two (2-core machine with other jobs running).
    threads: int = 1


PRESETS: dict[str, VisionPreset] = {
    "cpu": VisionPreset(
        name="cpu",
        image_size=48,
        n_train=768,
        n_val=64,
        n_test=128,
        base_steps=300,
        expert_steps=400,
        batch_size=32,
        base_lr=3e-3,
        expert_lr=4e-3,
        generations=300,
        bins=10,
    ),
    "mini": VisionPreset(
        name="mini",
        image_size=32,
        n_train=256,
        n_val=16,
        n_test=32,
        base_steps=200,
        expert_steps=150,
        batch_size=16,
        base_lr=3e-3,
        expert_lr=4e-3,
        generations=8,
        bins=5,
        pair_methods=("linear",),
        variant=False,
    ),
}


def vision_preset(name: str, **overrides: object) -> VisionPreset:
    """A preset by name, with fields replaced (``seed=3``); unknown names are errors."""
    if name not in PRESETS:
        raise CycleQDError(f"unknown vision preset {name!r} (known: {', '.join(PRESETS)})")
    fields = set(VisionPreset.__dataclass_fields__)
    bad = sorted(set(overrides) - fields)
    if bad:
        raise CycleQDError(f"vision preset has no field {', '.join(bad)}")
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]
