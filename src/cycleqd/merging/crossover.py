"""Crossover: a model-wise linear merge of the two parents' task vectors.

``child = (w1 * tau_1 + w2 * tau_2) / (w1 + w2)`` with ``w_i ~ N(mean, std)``, one weight per parent
for the whole model (the official CycleQD code's default) or one per layer. In genome space this is
the same linear map applied to the coefficient vectors.

``normalise=False`` drops the division: ``child = w1 * tau_1 + w2 * tau_2``, task arithmetic of
the parents. The paper's average keeps a child inside its parents' hull, which halves each parent's
skill when two single-skill experts meet; that is harmless for 8B models whose skills survive at
half strength, but a 135M model's LoRA experts lose most of theirs, and a short search cannot climb
back. The sum lets two experts' child keep both skills from the first generation on.
"""

from __future__ import annotations

import re

import torch

from cycleqd.merging.genome import Genome, combine

_LAYER = re.compile(r"\.(\d+)\.")


def layer_of(name: str) -> str:
    """The group a tensor belongs to for per-layer weights: its first numeric path component."""
    match = _LAYER.search(f".{name}.")
    return match.group(1) if match else "other"


def _draw(rng: torch.Generator, mean: float, std: float, normalise: bool) -> tuple[float, float]:
    w = torch.normal(mean, std, size=(2,), generator=rng) if std > 0 else torch.full((2,), mean)
    w1, w2 = float(w[0]), float(w[1])
    if not normalise:
        return w1, w2
    if abs(w1 + w2) < 1e-12:
        raise ValueError("crossover weights sum to zero; use a non-zero mean")
    return w1 / (w1 + w2), w2 / (w1 + w2)


def crossover(
    parent1: Genome,
    parent2: Genome,
    rng: torch.Generator,
    *,
    mean: float = 1.0,
    std: float = 0.01,
    per_layer: bool = False,
    normalise: bool = True,
) -> tuple[Genome, dict[str, tuple[float, float]]]:
    """The child and the weights used (keyed by layer group, ``model`` if model-wise)."""
    if not per_layer:
        w1, w2 = _draw(rng, mean, std, normalise)
        return combine([parent1, parent2], [w1, w2]), {"model": (w1, w2)}
    groups = sorted(
        {layer_of(n) for n in parent1.coeffs},
        key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g),
    )
    drawn = {g: _draw(rng, mean, std, normalise) for g in groups}
    w1 = {n: drawn[layer_of(n)][0] for n in parent1.coeffs}
    w2 = {n: drawn[layer_of(n)][1] for n in parent1.coeffs}
    return combine([parent1, parent2], [w1, w2]), drawn
