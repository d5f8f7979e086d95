"""Population forward: several genomes evaluated in one forward pass over the shared expert bases.

Every child the search breeds is ``theta_base + sum_e U_e diag(c_e) V_e^T`` per 2-D tensor; the
children of one group differ only in their coefficient vectors ``c``. So a batch whose rows belong
to different children needs, per affected layer, the resident (base) weight's matmul for all rows,
one ``x @ V^T`` over the active experts' kept directions, a per-row scale by that row's child's
coefficients, and one ``@ U^T``. For LoRA-rank experts that is a small fraction of the base matmul,
and it lets a whole group of children share every decoding step.

The mechanism is a forward hook on each module that owns an affected weight (``nn.Linear``,
``nn.Conv1d/2d/3d`` with ``groups=1``, ``nn.Embedding``; tied weights hook every owner), plus a
per-row bias delta for 1-D tensors that are such a module's bias. Nothing is model-specific: any
architecture the materialiser supports works, as long as the batch is the first dimension of a
hooked module's input. A tensor that no hook can vary per row (a norm weight whose task vectors are
non-zero and whose coefficients differ between the children) makes the group fall back to
per-child materialisation; so does a dense delta (Gaussian mutation). Tensors whose coefficients
are equal across the group are written into the resident weights once (:meth:`activate`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Genome
from cycleqd.merging.materialise import Materialiser

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class _Owner:
    """A module that reads a basis tensor, and as what (``weight`` or ``bias``)."""

    module: nn.Module
    role: str


@dataclass
class _RowTerm:
    """One tensor's per-row delta: factors of the active experts and each child's coefficients."""

    name: str
    role: str  # weight | bias
    left: torch.Tensor  # weight: U (out, R); bias: taus (E, out)
    right: torch.Tensor | None  # weight: Vh (R, in...); bias: None
    coeffs: torch.Tensor  # (K, R) or (K, E): one row per child of the group
    rows: torch.Tensor | None = None  # coefficients gathered per batch row, (B, R)


@dataclass
class PopulationPlan:
    """How a group of genomes is evaluated together.

    ``batched`` children share forward passes; ``fallback`` ones are materialised one at a time.
    ``reasons`` says why a child fell back (logged, and kept in the evaluation's metadata).
    """

    batched: list[int] = field(default_factory=list)
    fallback: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    row_tensors: list[str] = field(default_factory=list)
    rank: int = 0  # total active rank over all per-row tensors (the cost model's input)


def owners_of(module: nn.Module, targets: dict[str, torch.Tensor]) -> dict[str, list[_Owner]]:
    """For every basis tensor, the modules that hold it as ``weight`` or ``bias``.

    Identity of the parameter objects decides, so tied weights (an embedding shared with the LM
    head) list every module that reads them.
    """
    by_id = {id(t): name for name, t in targets.items()}
    out: dict[str, list[_Owner]] = {name: [] for name in targets}
    for sub in module.modules():
        for role in ("weight", "bias"):
            p = sub._parameters.get(role)
            if p is not None and id(p) in by_id:
                out[by_id[id(p)]].append(_Owner(sub, role))
    return out


def _hookable(owner: _Owner) -> bool:
    m = owner.module
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, _CONVS):
        return m.groups == 1
    return isinstance(m, nn.Embedding) and owner.role == "weight"


def _differ(values: Sequence[torch.Tensor]) -> bool:
    first = values[0]
    return any(not torch.equal(first, v) for v in values[1:])


class PopulationForward:
    """Installs per-row low-rank deltas on a resident model for a group of genomes.

    Args:
        basis: the experts' bases (on the materialiser's device).
        materialiser: writes the group's shared part into the resident weights.
        dtype: the dtype the model computes in (the factors are cast to it once per group).
    """

    def __init__(self, basis: ExpertBasis, materialiser: Materialiser, dtype: torch.dtype) -> None:
        self.basis = basis
        self.materialiser = materialiser
        self.dtype = dtype
        self.owners = owners_of(materialiser.module, materialiser.targets)
        self._terms: dict[nn.Module, list[_RowTerm]] = {}
        self._handles: list[RemovableHandle] = []
        self._rows: torch.Tensor | None = None
        # A vector whose task vectors are all zero (a LoRA expert never touches norms) has no
        # effect whatever its coefficients: it never forces a fallback.
        self._zero_vectors = {name for name, v in basis.vectors.items() if not bool(v.taus.any())}

    # -- planning --------------------------------------------------------------------------------
    def plan(self, genomes: Sequence[Genome]) -> PopulationPlan:
        """Which children can share forward passes, and which must be materialised alone."""
        plan = PopulationPlan()
        candidates = []
        for i, g in enumerate(genomes):
            if g.dense:
                plan.fallback.append(i)
                plan.reasons[i] = "dense delta (Gaussian mutation) lies outside the bases"
            else:
                candidates.append(i)
        if len(candidates) < 2:
            plan.fallback = sorted(plan.fallback + candidates)
            for i in candidates:
                plan.reasons.setdefault(i, "alone in its group")
            return plan
        group = [genomes[i] for i in candidates]
        for name in self.basis.names:
            if name in self._zero_vectors:
                continue
            if name in self.basis.matrices and not self._active_span(name, group):
                continue
            if not _differ([g.coeffs[name] for g in group]):
                continue
            owners = self.owners[name]
            if not owners or not all(_hookable(o) for o in owners):
                kinds = sorted({type(o.module).__name__ for o in owners}) or ["no module"]
                why = f"tensor {name!r} differs between children and is read by {kinds}"
                plan.fallback = sorted(plan.fallback + candidates)
                plan.reasons.update(dict.fromkeys(candidates, why))
                plan.row_tensors = []
                return plan
            plan.row_tensors.append(name)
            if name in self.basis.matrices:
                plan.rank += sum(hi - lo for lo, hi in self._active_span(name, group))
        plan.batched = candidates
        return plan

    def _active_span(self, name: str, group: Sequence[Genome]) -> list[tuple[int, int]]:
        """Column ranges of the experts that some child of the group uses on this tensor."""
        m = self.basis.matrices[name]
        spans: list[tuple[int, int]] = []
        for e in range(len(m.offsets) - 1):
            lo, hi = m.offsets[e], m.offsets[e + 1]
            if hi > lo and any(bool(g.coeffs[name][lo:hi].any()) for g in group):
                spans.append((lo, hi))
        return spans

    # -- activation ------------------------------------------------------------------------------
    @contextmanager
    def activate(self, genomes: Sequence[Genome], plan: PopulationPlan) -> Iterator[None]:
        """Resident weights = base + the group's shared part; per-row hooks for the rest.

        Child ``k`` of the context is ``genomes[plan.batched[k]]``; rows are assigned with
        :meth:`rows`. Hooks are removed on exit, whatever happens inside.
        """
        group = [genomes[i] for i in plan.batched]
        shared = dict(group[0].coeffs)
        for name in plan.row_tensors:
            shared[name] = torch.zeros_like(shared[name])
        self.materialiser.load(Genome(coeffs=shared))
        self._terms = {}
        for name in plan.row_tensors:
            for owner in self.owners[name]:
                self._terms.setdefault(owner.module, []).append(self._term(name, owner, group))
        self._handles = [m.register_forward_hook(self._hook) for m in self._terms]
        try:
            yield
        finally:
            for h in self._handles:
                h.remove()
            self._handles, self._terms, self._rows = [], {}, None

    def _term(self, name: str, owner: _Owner, group: Sequence[Genome]) -> _RowTerm:
        device = self.materialiser.device
        if owner.role == "bias":
            taus = self.basis.vectors[name].taus
            coeffs = torch.stack([g.coeffs[name] for g in group])
            return _RowTerm(name, "bias", taus.to(device, self.dtype), None, coeffs.to(device))
        m = self.basis.matrices[name]
        cols = torch.cat([torch.arange(lo, hi) for lo, hi in self._active_span(name, group)])
        u = m.U[:, cols.to(m.U.device)]
        vh = m.Vh[cols.to(m.Vh.device)].reshape(len(cols), *m.shape[1:])
        coeffs = torch.stack([g.coeffs[name][cols] for g in group])
        return _RowTerm(
            name,
            "weight",
            u.to(device, self.dtype).contiguous(),
            vh.to(device, self.dtype).contiguous(),
            coeffs.to(device, self.dtype),
        )

    @contextmanager
    def rows(self, children: torch.Tensor) -> Iterator[None]:
        """Rows of the next forward passes belong to these children (indices into the group)."""
        children = children.to(self.materialiser.device, torch.long)
        for terms in self._terms.values():
            for term in terms:
                term.rows = term.coeffs.index_select(0, children)
        self._rows = children
        try:
            yield
        finally:
            self._rows = None
            for terms in self._terms.values():
                for term in terms:
                    term.rows = None

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self._rows is None:
            raise CycleQDError(
                "population forward: the model ran without a row assignment (rows() not set)"
            )
        x = args[0]
        batch = self._rows.shape[0]
        if x.shape[0] != batch:
            raise CycleQDError(
                f"population forward: {type(module).__name__} received {x.shape[0]} rows, "
                f"the row assignment has {batch}; the batch must be the first dimension"
            )
        for term in self._terms[module]:
            output = output + _delta(module, term, x, output)
        return output


def _delta(
    module: nn.Module, term: _RowTerm, x: torch.Tensor, output: torch.Tensor
) -> torch.Tensor:
    """The per-row change of ``module``'s output from one tensor's row coefficients."""
    assert term.rows is not None
    rows = term.rows
    if term.role == "bias":
        b = (rows.to(term.left.dtype) @ term.left).to(output.dtype)  # (B, out)
        if isinstance(module, _CONVS):
            return b.reshape(*b.shape, *([1] * (output.dim() - 2)))
        return b.reshape(b.shape[0], *([1] * (output.dim() - 2)), b.shape[1])
    assert term.right is not None
    if isinstance(module, nn.Linear):
        z = F.linear(x.to(term.right.dtype), term.right)  # (B, ..., R)
        z = z * rows.reshape(rows.shape[0], *([1] * (z.dim() - 2)), rows.shape[1])
        return F.linear(z, term.left).to(output.dtype)
    if isinstance(module, nn.Embedding):
        z = F.embedding(x, term.left)  # (B, ..., R): rows of U picked by the token ids
        z = z * rows.reshape(rows.shape[0], *([1] * (z.dim() - 2)), rows.shape[1])
        return (z @ term.right).to(output.dtype)
    # convolutions: the kernel delta U diag(c) Vh is a conv with the R kernels of Vh, a per-row
    # scale, then a 1x1 mix with U
    z = module._conv_forward(x.to(term.right.dtype), term.right, None)  # type: ignore[operator]
    z = z * rows.reshape(*rows.shape, *([1] * (z.dim() - 2)))
    return torch.einsum("nr...,or->no...", z, term.left).to(output.dtype)
