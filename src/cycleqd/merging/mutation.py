"""Mutation operators.

SVD mutation (the paper's): for every 2-D tensor add ``U_e diag(u * s_e) V_e^T`` with
``u ~ U[0, w_max)`` per singular value, where ``U_e, s_e, V_e`` belong to the active task's expert.
In genome space that is ``c[slice_e] += u * s_e``: exact and cheap. 1-D tensors are not mutated.
The paper's ``u`` is never negative, so the mutation can only grow an expert's directions; with
``signed`` it is drawn from ``U(-w_max, w_max)`` instead, so the search can also scale a direction
down (where task vectors of several experts interfere, shrinking is what helps).

Gaussian mutation (the paper's ablation) adds ``N(0, std)`` to every weight; it leaves the basis,
so the noise is kept as a dense delta in the genome.
"""

from __future__ import annotations

import torch

from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Genome


def svd_mutation(
    genome: Genome,
    basis: ExpertBasis,
    expert: int,
    rng: torch.Generator,
    *,
    w_max: float = 0.1,
    signed: bool = False,
) -> Genome:
    """A mutated copy of ``genome`` along expert ``expert``'s singular directions."""
    coeffs = dict(genome.coeffs)
    for name in sorted(basis.matrices):
        m = basis.matrices[name]
        sl = m.slice(expert)
        u = torch.rand(sl.stop - sl.start, generator=rng) * w_max
        if signed:
            u = 2.0 * u - w_max
        c = coeffs[name].clone()
        c[sl] += u * m.S[sl].to(c.device)
        coeffs[name] = c
    return Genome(coeffs=coeffs, dense=dict(genome.dense))


def gaussian_mutation(
    genome: Genome, basis: ExpertBasis, rng: torch.Generator, *, std: float = 3e-4
) -> Genome:
    """A copy of ``genome`` with dense ``N(0, std)`` noise on every weight."""
    dense = dict(genome.dense)
    for name in basis.names:
        shape = basis.matrices[name].shape if name in basis.matrices else basis.vectors[name].shape
        noise = torch.randn(shape, generator=rng) * std
        dense[name] = dense[name] + noise if name in dense else noise
    return Genome(coeffs=dict(genome.coeffs), dense=dense)
