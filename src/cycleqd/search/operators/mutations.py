"""Mutations: ``svd`` (the paper's), ``gaussian`` (its ablation) and ``none``.

See :mod:`cycleqd.merging.mutation` for the arithmetic.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cycleqd.merging.genome import Genome
from cycleqd.merging.mutation import gaussian_mutation, svd_mutation
from cycleqd.schema import StrictModel
from cycleqd.search.operators.base import MUTATIONS, Breeding, NoParams, operator


class SVDParams(StrictModel):
    """``u ~ U[0, w_max)`` per singular value of the active task's expert."""

    w_max: float = Field(default=0.1, ge=0.0, description="largest step per singular value")
    signed: bool = Field(
        default=False,
        description="draw u from U(-w_max, w_max) instead of the paper's U[0, w_max), so a "
        "direction can shrink as well as grow",
    )


class GaussianParams(StrictModel):
    """Dense ``N(0, std)`` noise on every weight."""

    std: float = Field(default=3e-4, ge=0.0, description="standard deviation of the noise")


@operator(MUTATIONS, "svd", SVDParams)
def svd(child: Genome, rng: torch.Generator, params: SVDParams, ctx: Breeding) -> Genome:
    """The paper's: add ``U diag(u * s) Vh`` of the active task's expert, u drawn per value."""
    return svd_mutation(child, ctx.basis, ctx.expert, rng, w_max=params.w_max, signed=params.signed)


@operator(MUTATIONS, "gaussian", GaussianParams)
def gaussian(child: Genome, rng: torch.Generator, params: GaussianParams, ctx: Breeding) -> Genome:
    """The paper's ablation: dense Gaussian noise on every weight (kept as a dense delta)."""
    return gaussian_mutation(child, ctx.basis, rng, std=params.std)


@operator(MUTATIONS, "none", NoParams)
def none(child: Genome, rng: torch.Generator, params: NoParams, ctx: Breeding) -> Genome:
    """No mutation: the child is its parents' crossover (the paper's "no mutation" ablation)."""
    return child
