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

``assemble``: each expert's slice of the genome is taken, in full, from the best elite of the
archive whose task that expert serves. Where the best elites are the experts this is task
arithmetic at weight 1 (their task vectors added in full), the right merge for experts that do
not interfere (anchored experts); unlike adding the elites, a best elite that is itself a child
carrying two experts' slices gives only its own task's slice, so no expert is counted twice
(adding them did exactly that in the demo's first anchored run: code 0.50 on validation against
the code expert's 0.75).
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


def assemble_genome(basis: ExpertBasis, elites: list[Genome], task_experts: list[int]) -> Genome:
    """Each expert's slice from the best elite of its task's archive (``elites[t]``), in full.

    ``task_experts[t]`` is the expert archive ``t`` serves. An expert served by several archives
    gets the mean of their elites' slices; one served by none the mean over all distinct elites.
    Dense deltas (operators that leave the basis) are averaged over the distinct elites.
    """
    if len(elites) != len(task_experts) or not elites:
        raise ValueError("assemble_genome needs one best elite per archive")
    distinct = list({id(g): g for g in elites}.values())

    # the elites each expert's slice comes from, found once for every tensor
    sources = [
        [g for g, e in zip(elites, task_experts, strict=True) if e == expert] or distinct
        for expert in range(len(basis.experts))
    ]
    coeffs: dict[str, torch.Tensor] = {}
    for name, matrix in basis.matrices.items():
        c = torch.zeros_like(elites[0].coeffs[name])
        for expert, given in enumerate(sources):
            part = matrix.slice(expert)
            c[part] = sum(g.coeffs[name][part] for g in given) / len(given)
        coeffs[name] = c
    for name in basis.vectors:
        c = torch.zeros_like(elites[0].coeffs[name])
        for expert, given in enumerate(sources):
            c[expert] = sum(g.coeffs[name][expert] for g in given) / len(given)
        coeffs[name] = c
    dense: dict[str, torch.Tensor] = {}
    for name in sorted({k for g in distinct for k in g.dense}):
        parts = [g.dense[name] for g in distinct if name in g.dense]
        dense[name] = sum(parts[1:], parts[0]) / len(distinct)
    return Genome(coeffs=coeffs, dense=dense)
