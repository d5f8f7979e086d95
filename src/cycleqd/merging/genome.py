"""Genomes: an individual as coefficients in the experts' SVD bases.

A genome holds, per 2-D tensor, one coefficient vector aligned with the concatenated basis of
:class:`~cycleqd.merging.basis.MatrixBasis` and, per 1-D tensor, one scalar per expert. Operators
that leave the basis (dense Gaussian noise) add an optional dense delta, stored with the genome.
Expert ``e``'s own genome is its singular values on its own slice: materialising it reproduces the
expert exactly (up to float32 rounding).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import ExpertBasis

Combine = Literal["sum", "ties"]


@dataclass
class Genome:
    """Coefficients per tensor name, plus an optional dense delta per tensor name."""

    coeffs: dict[str, torch.Tensor]
    dense: dict[str, torch.Tensor] = field(default_factory=dict)

    def nbytes(self) -> int:
        tensors = [*self.coeffs.values(), *self.dense.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def save(self, path: Path) -> None:
        """Atomic write: a crash leaves either the old file or the new one, never half of one."""
        tensors = {f"c::{k}": v.contiguous().cpu() for k, v in self.coeffs.items()}
        tensors.update({f"d::{k}": v.contiguous().cpu() for k, v in self.dense.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Genome:
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError, ValueError) as exc:
            raise CycleQDError(f"{path}: corrupted or unreadable genome file ({exc})") from exc
        coeffs = {k[3:]: v for k, v in tensors.items() if k.startswith("c::")}
        dense = {k[3:]: v for k, v in tensors.items() if k.startswith("d::")}
        return cls(coeffs=coeffs, dense=dense)


def expert_genome(basis: ExpertBasis, expert: int) -> Genome:
    """The genome that materialises expert ``expert`` exactly."""
    coeffs = {}
    for name, m in basis.matrices.items():
        c = torch.zeros(m.rank)
        c[m.slice(expert)] = m.S[m.slice(expert)]
        coeffs[name] = c
    for name in basis.vectors:
        a = torch.zeros(len(basis.experts))
        a[expert] = 1.0
        coeffs[name] = a
    return Genome(coeffs=coeffs)


def base_genome(basis: ExpertBasis) -> Genome:
    """The genome with every coefficient zero: it materialises the base model itself."""
    coeffs = {name: torch.zeros(m.rank) for name, m in basis.matrices.items()}
    coeffs |= {name: torch.zeros(len(basis.experts)) for name in basis.vectors}
    return Genome(coeffs=coeffs)


def combine(genomes: Iterable[Genome], weights: Iterable[float | dict[str, float]]) -> Genome:
    """``sum_i w_i * g_i``: crossover and the final merge are both this linear map.

    A weight may be a mapping from tensor name to weight (per-layer crossover).
    """
    genomes = list(genomes)
    weights = list(weights)
    if len(genomes) != len(weights) or not genomes:
        raise ValueError("combine needs one weight per genome")

    def w(i: int, name: str) -> float:
        wi = weights[i]
        return float(wi[name]) if isinstance(wi, dict) else float(wi)

    coeffs = {
        name: sum(w(i, name) * g.coeffs[name] for i, g in enumerate(genomes))
        for name in genomes[0].coeffs
    }
    dense: dict[str, torch.Tensor] = {}
    for name in sorted({k for g in genomes for k in g.dense}):
        parts = [w(i, name) * g.dense[name] for i, g in enumerate(genomes) if name in g.dense]
        dense[name] = sum(parts[1:], parts[0])
    return Genome(coeffs=coeffs, dense=dense)


def task_vector(
    basis: ExpertBasis,
    genome: Genome,
    name: str,
    *,
    combine: Combine = "sum",
    density: float = 0.5,
) -> torch.Tensor:
    """The dense task vector of one tensor (on the basis' device), shaped like the weight.

    ``combine``: how the genome's per-expert parts (:func:`expert_parts`) become one task vector:
    ``sum`` (linear in the coefficients: the paper's genome space) or ``ties`` (TIES-merged at
    ``density``; see ``basis.combine``). The dense delta, if any, is added after either.
    """
    if combine == "ties":
        parts = expert_parts(basis, genome, name)
        if name in basis.matrices:
            shape, device = basis.matrices[name].shape, basis.matrices[name].U.device
        else:
            shape, device = basis.vectors[name].shape, basis.vectors[name].taus.device
        from cycleqd.merging.ties import ties_combine

        delta = (
            ties_combine(parts, density=density).to(device).reshape(shape)
            if parts
            else torch.zeros(shape, device=device)
        )
        if name in genome.dense:
            delta = delta + genome.dense[name].to(delta.device, delta.dtype)
        return delta
    if combine != "sum":
        raise ValueError(f"combine must be sum or ties, got {combine!r}")
    if name in basis.matrices:
        m = basis.matrices[name]
        c = genome.coeffs[name].to(m.U.device, torch.float32)
        delta = (m.U.float() * c) @ m.Vh.float()
    else:
        v = basis.vectors[name]
        delta = genome.coeffs[name].to(v.taus.device, v.taus.dtype) @ v.taus
    delta = delta.reshape(basis.matrices[name].shape if name in basis.matrices else v.shape)
    if name in genome.dense:
        delta = delta + genome.dense[name].to(delta.device, delta.dtype)
    return delta


def expert_parts(basis: ExpertBasis, genome: Genome, name: str) -> list[torch.Tensor]:
    """Each expert's part of the genome's task vector on one tensor (its own basis slice times
    its coefficients), for the experts whose part is not zero; the dense delta is not included.
    With ``sum`` these parts are simply added; ``ties`` resolves their conflicts entry by entry.
    """
    if name in basis.matrices:
        m = basis.matrices[name]
        c = genome.coeffs[name].to(m.U.device, torch.float32)
        parts = []
        for e in range(len(m.offsets) - 1):
            lo, hi = m.offsets[e], m.offsets[e + 1]
            if hi > lo and bool(c[lo:hi].any()):
                u, vh = m.U[:, lo:hi].float(), m.Vh[lo:hi].float()
                parts.append(((u * c[lo:hi]) @ vh).reshape(m.shape))
        return parts
    v = basis.vectors[name]
    a = genome.coeffs[name].to(v.taus.device, v.taus.dtype)
    return [
        (a[e] * v.taus[e]).reshape(v.shape)
        for e in range(len(a))
        if float(a[e]) != 0.0 and bool(v.taus[e].any())
    ]
