"""The final model: a softmax-weighted merge of the best elite of every archive.

``theta = theta_base + sum_k beta_k tau_k`` with ``beta = softmax(q / T)`` over the elites'
qualities. Task vectors are linear in the genome, so this is the same combination of genomes.
"""

from __future__ import annotations

import torch

from cycleqd.merging.genome import Genome, combine


def softmax_weights(qualities: list[float], temperature: float = 1.0) -> list[float]:
    """``beta_k``; a lower temperature moves the merge towards the single best elite."""
    q = torch.tensor(qualities, dtype=torch.float64) / temperature
    return torch.softmax(q, 0).tolist()


def final_genome(elites: list[Genome], qualities: list[float], temperature: float = 1.0) -> Genome:
    """The merged genome of the final model."""
    return combine(elites, softmax_weights(qualities, temperature))
