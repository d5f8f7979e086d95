"""Write an individual's weights straight into a resident model, tensor by tensor.

No model is re-instantiated and nothing touches the disk: ``theta = theta_base + tau(genome)`` is
computed per tensor on the model's device and copied into the existing parameter. Peak extra
memory is one tensor's worth. An engine whose parameters are not the checkpoint's tensors (vLLM
fuses and repacks them) takes the computed tensors through a writer instead, by checkpoint name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Combine, Genome, task_vector
from cycleqd.merging.sources import SafetensorsSource, StateSource


def resolve_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer a checkpoint tensor name refers to.

    Checkpoint names usually equal the module's own names; some models save without (or with) the
    ``base_model_prefix``, so both spellings are tried. Tied weights resolve to the same tensor.
    """
    tensors = module.state_dict(keep_vars=True)
    prefix = getattr(module, "base_model_prefix", "")
    candidates = [name]
    if prefix:
        candidates += [f"{prefix}.{name}", name.removeprefix(f"{prefix}.")]
    for candidate in candidates:
        if candidate in tensors:
            return tensors[candidate]
    raise CycleQDError(f"tensor {name!r} of the checkpoint has no counterpart in the loaded model")


class Materialiser:
    """Holds the base weights and the expert bases on the model's device."""

    def __init__(
        self,
        basis: ExpertBasis,
        base: StateSource,
        module: nn.Module | None,
        device: torch.device,
        *,
        combine: Combine = "sum",
        density: float = 0.5,
        keep_base: bool | None = None,
        writer: Callable[[Iterable[tuple[str, torch.Tensor]]], None] | None = None,
    ) -> None:
        """``combine``/``density``: how a genome's per-expert parts form its task vector
        (``basis.combine``; see :func:`~cycleqd.merging.genome.task_vector`).

        ``keep_base``: hold the base's tensors in memory (in the checkpoint's dtype). Default:
        on an accelerator, and for sources that cannot be read tensor by tensor. On the CPU a
        safetensors base is instead read one tensor at a time whenever it is needed, from the
        page cache, so the process holds the resident model once, not twice (measured with
        ``benchmarks/scale_memory.py``).

        ``writer`` (instead of ``module``): receives every tensor of a genome, by checkpoint
        name, in float32 (the vLLM engine's in-place reload). Every tensor is given each time,
        since such an engine prepares a fused layer again only when all its parts arrive.
        """
        if (module is None) == (writer is None):
            raise ValueError("give the materialiser a module or a writer, not both")
        self.basis = basis
        self.combine: Combine = combine
        self.density = density
        self.module = module
        self.writer = writer
        self.device = device
        self._targets: dict[str, torch.Tensor] = {}
        self._base: dict[str, torch.Tensor] = {}
        self._source = base
        self._at_base: set[str] = set()  # targets known to hold the base's values
        if keep_base is None:
            keep_base = device.type != "cpu" or not isinstance(base, SafetensorsSource)
        self.keep_base = keep_base
        for name in basis.names:
            if module is not None:
                target = resolve_tensor(module, name)
                if tuple(target.shape) != tuple(base.shape(name)):
                    raise CycleQDError(
                        f"tensor {name!r}: model has shape {list(target.shape)}, "
                        f"checkpoint has {list(base.shape(name))}"
                    )
                self._targets[name] = target
            # kept in the checkpoint's dtype (a bf16 model's base costs its own size, not twice
            # that); each tensor is widened to float32 only while its weights are computed
            if keep_base:
                self._base[name] = base.get(name).to(device=device)
        for m in basis.matrices.values():
            m.U, m.S, m.Vh = (t.to(device) for t in (m.U, m.S, m.Vh))
        for v in basis.vectors.values():
            v.taus = v.taus.to(device)
        # tensors no expert changes: every genome leaves them at the base
        self._no_direction = {n for n, m in basis.matrices.items() if m.rank == 0} | {
            n for n, v in basis.vectors.items() if not bool(v.taus.any())
        }

    def base_tensor(self, name: str) -> torch.Tensor:
        """The base's tensor ``name`` in float32 on the device (read now unless kept)."""
        if self.keep_base:
            return self._base[name].float()
        return self._source.read(name).to(self.device).float()  # type: ignore[attr-defined]

    @property
    def targets(self) -> dict[str, torch.Tensor]:
        """The resident model's tensor for every basis tensor name."""
        return self._targets

    def task_vector(self, genome: Genome, name: str) -> torch.Tensor:
        """``genome``'s task vector of tensor ``name`` under this materialiser's ``combine``."""
        return task_vector(self.basis, genome, name, combine=self.combine, density=self.density)

    def _unchanged(self, genome: Genome, name: str) -> bool:
        """Whether ``genome`` leaves tensor ``name`` at the base (no direction, no delta)."""
        if name in genome.dense:
            return False
        return name in self._no_direction or not bool(genome.coeffs[name].any())

    @torch.no_grad()
    def load(self, genome: Genome) -> None:
        """Make the resident model compute with ``genome``'s weights.

        A tensor the genome leaves at the base is written once and then skipped while it stays
        there (with adapter experts: every tensor no adapter touches, the embeddings and norms).
        """
        if self.writer is not None:
            self.writer(self._computed(genome))
            return
        for name in self.basis.names:
            target = self._targets[name]
            if self._unchanged(genome, name):
                if name not in self._at_base:
                    target.data.copy_(self.base_tensor(name).view_as(target))
                    self._at_base.add(name)
                continue
            self._at_base.discard(name)
            if not (
                self.combine == "sum"
                and name in self.basis.matrices
                and name not in genome.dense
                and target.dtype == torch.float32
                and target.is_contiguous()
            ):
                theta = self.base_tensor(name) + self.task_vector(genome, name)
                target.data.copy_(theta)
                continue
            self._load_matrix(name, genome.coeffs[name])

    def _computed(self, genome: Genome) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of ``genome``'s weights in float32, one at a time, by checkpoint name."""
        for name in self.basis.names:
            theta = self.base_tensor(name)
            if not self._unchanged(genome, name):
                theta = theta + self.task_vector(genome, name)
            yield name, theta

    def _load_matrix(self, name: str, coeffs: torch.Tensor) -> None:
        """``theta = base + U diag(c) Vh`` written straight into the parameter.

        Why not ``copy_(base + task_vector)``: with low-rank (LoRA) experts the product is cheap and
        the time goes into materialising ``base + delta`` as a temporary and copying it over, so
        one fused ``addmm`` into the parameter's own storage halves the memory traffic. The
        coefficients scale whichever factor is smaller, and experts whose coefficients are all zero
        on this tensor (a child of two experts out of three) are skipped: their columns add nothing.
        """
        m = self.basis.matrices[name]
        c = coeffs.to(m.U.device, torch.float32)
        rows = m.shape[0]
        out = self._targets[name].data.view(rows, -1)
        base = self.base_tensor(name).view(rows, -1)
        spans: list[list[int]] = []
        for e in range(len(m.offsets) - 1):
            lo, hi = m.offsets[e], m.offsets[e + 1]
            if hi == lo or not bool(c[lo:hi].any()):
                continue
            if spans and spans[-1][1] == lo:
                spans[-1][1] = hi
            else:
                spans.append([lo, hi])
        if not spans:
            out.copy_(base)
            return
        for k, (lo, hi) in enumerate(spans):
            u, vh, ck = m.U[:, lo:hi].float(), m.Vh[lo:hi].float(), c[lo:hi]
            if u.shape[0] <= vh.shape[1]:
                left, right = u * ck, vh
            else:
                left, right = u, ck[:, None] * vh
            if k == 0:
                torch.addmm(base, left, right, out=out)
            else:
                out.addmm_(left, right)

    @torch.no_grad()
    def weights(
        self, genome: Genome, dtype: torch.dtype = torch.float32
    ) -> dict[str, torch.Tensor]:
        """Full weights on the CPU (for export and tests), without touching the model: computed
        in float32 tensor by tensor, each kept in ``dtype``."""
        return {name: theta.to("cpu", dtype) for name, theta in self._computed(genome)}
