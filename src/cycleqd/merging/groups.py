"""A small genome for search methods that learn a covariance: one scale per expert per group.

CycleQD's genome holds a coefficient per singular direction of every tensor: tens of thousands
of numbers even for a 135M model, too many for CMA-ES to learn anything in the few hundred
evaluations a merge search can afford. Grouping the tensors (the whole ``model``, each transformer
``block``, or each ``tensor_kind`` such as ``q_proj`` across blocks) and giving each expert one
scale per group leaves ``experts x groups`` numbers. A point ``alpha`` of that space is the
genome ``sum_e alpha[e, group(tensor)] * expert_e's own genome``: the base plus each expert's task
vector scaled per group (mergekit-evolve's and the official code's CMA-ES search spaces are of
this kind). It lives inside the paper's genome space, so every other part of a run (materialiser,
archives, final merges, export) takes these children as they are.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from cycleqd.merging.basis import ExpertBasis, tensor_group
from cycleqd.merging.crossover import layer_of
from cycleqd.merging.genome import Genome

GroupKind = Literal["model", "block", "tensor_kind"]


def group_of(name: str, kind: GroupKind) -> str:
    """The group of tensor ``name``: ``model``; its block (``block 7``, the per-layer crossover's
    layer; ``block other`` for the embeddings, final norm and head); or its kind across blocks
    (``model.layers.*.self_attn.q_proj.weight``, as the basis reports ranks)."""
    if kind == "model":
        return "model"
    if kind == "block":
        return f"block {layer_of(name)}"
    if kind == "tensor_kind":
        return tensor_group(name)
    raise ValueError(f"genome groups must be model, block or tensor_kind, got {kind!r}")


class GroupGenome:
    """The map from ``experts x groups`` scales to the paper's genome, for one basis."""

    def __init__(self, basis: ExpertBasis, kind: GroupKind) -> None:
        self.basis = basis
        self.kind = kind
        names = [*basis.matrices, *basis.vectors]
        self.groups = sorted({group_of(n, kind) for n in names})
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_index = {n: index[group_of(n, kind)] for n in names}
        self.n_experts = len(basis.experts)

    @property
    def dim(self) -> int:
        """Length of a solution vector: experts x groups, expert-major."""
        return self.n_experts * len(self.groups)

    def point(self, scales: np.ndarray | list[float]) -> np.ndarray:
        """The solution whose every group scales expert ``e`` by ``scales[e]``."""
        scales = np.asarray(scales, dtype=np.float64)
        if scales.shape != (self.n_experts,):
            raise ValueError(f"need one scale per expert ({self.n_experts}), got {scales.shape}")
        return np.repeat(scales, len(self.groups))

    def genome(self, solution: np.ndarray) -> Genome:
        """The genome of a solution vector (see the module docstring)."""
        alphas = np.asarray(solution, dtype=np.float64).reshape(self.n_experts, len(self.groups))
        scale = torch.from_numpy(alphas).float()
        coeffs: dict[str, torch.Tensor] = {}
        for name, m in self.basis.matrices.items():
            g = self.group_index[name]
            c = torch.zeros(m.rank)
            for e in range(self.n_experts):
                part = m.slice(e)
                c[part] = scale[e, g] * m.S[part].float().cpu()
            coeffs[name] = c
        for name in self.basis.vectors:
            coeffs[name] = scale[:, self.group_index[name]].clone()
        return Genome(coeffs=coeffs)
