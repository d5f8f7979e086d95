"""The final model: a merge of the best elite of every archive.

``softmax`` (the paper's): ``theta = theta_base + sum_k beta_k tau_k`` with
``beta = softmax(q / T)`` over the elites' qualities. Task vectors are linear in the genome, so
this is the same combination of genomes.

``ties``: TIES-merging (Yadav et al., NeurIPS 2023) of the elites' task vectors, computed by
mergekit's own ``ties`` method in memory: each task vector keeps its largest ``density`` share of
entries, a sign is elected per entry, and only agreeing entries are averaged. Why: the archives'
best elites are specialists, and where their task vectors overlap, the softmax merge adds them at
up to full strength each, which is where the demo's skills interfered; TIES trims and resolves
that overlap entry by entry. The merge is not a combination of basis directions, so it is stored
as the genome's dense delta (materialised like any other genome, evaluated one model at a time).
"""

from __future__ import annotations

import torch

from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Combine, Genome, combine, task_vector


def softmax_weights(qualities: list[float], temperature: float = 1.0) -> list[float]:
    """``beta_k``; a lower temperature moves the merge towards the single best elite."""
    q = torch.tensor(qualities, dtype=torch.float64) / temperature
    return torch.softmax(q, 0).tolist()


def final_genome(elites: list[Genome], qualities: list[float], temperature: float = 1.0) -> Genome:
    """The merged genome of the final model."""
    return combine(elites, softmax_weights(qualities, temperature))


def ties_genome(
    basis: ExpertBasis,
    elites: list[Genome],
    *,
    density: float = 0.5,
    combine: Combine = "sum",
    combine_density: float = 0.5,
) -> Genome:
    """TIES merge of the ``elites``' task vectors (equal weights, mergekit's defaults otherwise).

    Pass each distinct elite once: an elite listed twice would cast two votes in the sign
    election. One elite alone is returned as it is (TIES of one vector would only trim it).
    ``combine``/``combine_density``: how each elite's own task vector is formed (``basis.combine``).
    """
    if not elites:
        raise ValueError("ties_genome needs at least one elite")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"TIES density must lie in (0, 1], got {density}")
    if len(elites) == 1:
        return elites[0]
    from cycleqd.merging.ties import ties_combine

    dense = {
        name: ties_combine(
            [task_vector(basis, g, name, combine=combine, density=combine_density) for g in elites],
            density=density,
        )
        for name in basis.names
    }
    coeffs = {name: torch.zeros_like(c) for name, c in elites[0].coeffs.items()}
    return Genome(coeffs=coeffs, dense=dense)
