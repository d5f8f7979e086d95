"""Crossovers: ``linear`` (the paper's model-wise merge) and ``per_expert`` (per genome slice).

See :mod:`cycleqd.merging.crossover` for the arithmetic and why ``per_expert`` exists.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cycleqd.merging.crossover import crossover
from cycleqd.merging.genome import Genome
from cycleqd.schema import StrictModel
from cycleqd.search.operators.base import CROSSOVERS, Breeding, operator


class CrossoverParams(StrictModel):
    """Parent weights ``w_i ~ N(mean, std)``, one per parent for the model or per layer."""

    mean: float = Field(default=1.0, description="mean of each parent's weight")
    std: float = Field(default=0.01, ge=0.0, description="spread of each parent's weight")
    per_layer: bool = Field(default=False, description="one pair of weights per layer")


Weights = dict[str, tuple[float, float]]


@operator(CROSSOVERS, "linear", CrossoverParams)
def linear(
    parent1: Genome, parent2: Genome, rng: torch.Generator, params: CrossoverParams, ctx: Breeding
) -> tuple[Genome, Weights]:
    """The weighted average of the parents' task vectors."""
    return crossover(
        parent1, parent2, rng, mean=params.mean, std=params.std, per_layer=params.per_layer
    )


@operator(CROSSOVERS, "per_expert", CrossoverParams)
def per_expert(
    parent1: Genome, parent2: Genome, rng: torch.Generator, params: CrossoverParams, ctx: Breeding
) -> tuple[Genome, Weights]:
    """The same merge per expert slice, weighted by how much of that expert each parent has."""
    return crossover(
        parent1,
        parent2,
        rng,
        mean=params.mean,
        std=params.std,
        per_layer=params.per_layer,
        kind="per_expert",
        basis=ctx.basis,
    )
