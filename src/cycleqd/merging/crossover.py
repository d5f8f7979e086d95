"""Crossover: a merge of the two parents' task vectors, with Gaussian weights.

``linear`` (the paper's): ``child = (w1 * tau_1 + w2 * tau_2) / (w1 + w2)`` with
``w_i ~ N(mean, std)``, one weight per parent for the whole model (the official CycleQD code's
default) or one per layer. In genome space this is the same linear map on the coefficients.

``per_expert``: the same merge, done separately on each expert's slice of the genome, with the
weights scaled by how much of that expert each parent carries (the norm of its slice):
``c_e = (w1 |c1_e| c1_e + w2 |c2_e| c2_e) / (w1 |c1_e| + w2 |c2_e|)``. A skill only one parent
carries passes to the child whole; one both carry is averaged as in ``linear``; no coefficient
grows past the larger parent's. Why: ``linear`` halves each skill when two single-skill experts
meet, and the search must then climb back through mutation, one small step a generation. Summing
instead (task arithmetic) keeps both skills in the first generation but overshoots in the next:
in the SmolLM2-135M demo a child of (code + os) and the code expert held twice the code vector
and fell from 0.62 to 0.44 on code validation, and children with three or more summed vectors
scored 0 everywhere.
"""

from __future__ import annotations

import re
from typing import Literal

import torch

from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Genome, combine

CrossoverKind = Literal["linear", "per_expert"]
_LAYER = re.compile(r"\.(\d+)\.")


def layer_of(name: str) -> str:
    """The group a tensor belongs to for per-layer weights: its first numeric path component."""
    match = _LAYER.search(f".{name}.")
    return match.group(1) if match else "other"


def _draw(rng: torch.Generator, mean: float, std: float) -> tuple[float, float]:
    w = torch.normal(mean, std, size=(2,), generator=rng) if std > 0 else torch.full((2,), mean)
    w1, w2 = float(w[0]), float(w[1])
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
    kind: CrossoverKind = "linear",
    basis: ExpertBasis | None = None,
) -> tuple[Genome, dict[str, tuple[float, float]]]:
    """The child and the normalised weights used (keyed by layer group, ``model`` if model-wise).

    ``per_expert`` needs the ``basis`` (where each expert's slice of a genome lies).
    """
    if kind == "per_expert" and basis is None:
        raise ValueError("per_expert crossover needs the expert basis")
    if not per_layer:
        w1, w2 = _draw(rng, mean, std)
        drawn = {"model": (w1, w2)}
        weights: list[float | dict[str, float]] = [w1, w2]
    else:
        groups = sorted(
            {layer_of(n) for n in parent1.coeffs},
            key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g),
        )
        drawn = {g: _draw(rng, mean, std) for g in groups}
        weights = [{n: drawn[layer_of(n)][i] for n in parent1.coeffs} for i in range(2)]
    if kind == "linear":
        return combine([parent1, parent2], weights), drawn
    assert basis is not None
    coeffs = {
        name: _per_expert(
            parent1.coeffs[name], parent2.coeffs[name], _weight(weights, name), slices
        )
        for name, slices in _expert_slices(basis).items()
    }
    # dense deltas (Gaussian mutation) lie outside the expert slices: merged as in ``linear``
    dense = combine([Genome(coeffs={}, dense=p.dense) for p in (parent1, parent2)], weights).dense
    return Genome(coeffs=coeffs, dense=dense), drawn


def _weight(weights: list[float | dict[str, float]], name: str) -> tuple[float, float]:
    w1, w2 = (float(w[name]) if isinstance(w, dict) else float(w) for w in weights)
    return w1, w2


def _expert_slices(basis: ExpertBasis) -> dict[str, list[slice]]:
    """Where each expert's coefficients lie in every tensor's coefficient vector."""
    k = len(basis.experts)
    out = {name: [m.slice(e) for e in range(k)] for name, m in basis.matrices.items()}
    out |= {name: [slice(e, e + 1) for e in range(k)] for name in basis.vectors}
    return out


def _per_expert(
    c1: torch.Tensor, c2: torch.Tensor, w: tuple[float, float], slices: list[slice]
) -> torch.Tensor:
    child = torch.zeros_like(c1)
    for sl in slices:
        a1 = w[0] * float(c1[sl].norm())
        a2 = w[1] * float(c2[sl].norm())
        if a1 + a2 > 0:
            child[sl] = (a1 * c1[sl] + a2 * c2[sl]) / (a1 + a2)
    return child
