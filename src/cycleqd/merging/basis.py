"""Expert SVD bases: the coordinate system every CycleQD individual lives in.

Crossover is linear and the SVD mutation adds terms along an expert's own singular vectors, so
every reachable task vector is, per 2-D tensor, ``sum_e U_e diag(c_e) V_e^T`` and, per 1-D tensor,
``sum_e a_e tau_e``. Computing the SVD of each expert's task vector once (and caching it on disk,
keyed by the checkpoints' content) lets individuals be stored as coefficient vectors of a few MB.

Tensors of rank > 2 (convolution kernels) are reshaped to ``(out, -1)`` so any PyTorch model works.

``kind="tsv"`` decorrelates the experts' bases, after Task Singular Vectors (Gargiulo et al.,
CVPR 2025): per tensor, the concatenated ``[U_1 ... U_T]`` and ``[V_1 ... V_T]`` are replaced by
their orthogonal polar factors (the closest matrices with orthonormal columns), so directions of
different experts no longer overlap and adding their terms no longer double-counts shared
directions. Each expert's own genome then materialises an approximation of that expert; how far
it moves (relative Frobenius error over all 2-D task vectors) is kept as ``fidelity``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cycleqd.errors import CycleQDError
from cycleqd.merging.adapters import LowRankSource, low_rank_svd
from cycleqd.merging.sources import StateSource, check_compatible

BASIS_FORMAT = 1


@dataclass
class MatrixBasis:
    """Concatenated singular bases of all experts for one tensor.

    ``U`` is ``(m, R)`` and ``Vh`` is ``(R, n)`` with ``R = sum_e r_e``; expert ``e`` owns columns
    ``offsets[e]:offsets[e+1]`` and its own genome is ``S`` on that slice.
    """

    shape: tuple[int, ...]
    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    offsets: list[int]

    def slice(self, expert: int) -> slice:
        return slice(self.offsets[expert], self.offsets[expert + 1])

    @property
    def rank(self) -> int:
        return self.offsets[-1]


@dataclass
class VectorBasis:
    """Dense task vectors of all experts for a 1-D tensor (norm weights, biases), ``(E, numel)``."""

    shape: tuple[int, ...]
    taus: torch.Tensor


@dataclass
class ExpertBasis:
    """All experts' bases for every floating-point tensor of the model."""

    experts: list[str]
    matrices: dict[str, MatrixBasis] = field(default_factory=dict)
    vectors: dict[str, VectorBasis] = field(default_factory=dict)
    fingerprint: str = ""
    kind: str = "svd"
    # per expert, ||tau_e(genome) - tau_e|| / ||tau_e|| over the 2-D tensors (0 for ``svd``)
    fidelity: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Tensor names in a fixed order: random draws iterate over this, so it must be stable."""
        return sorted([*self.matrices, *self.vectors])

    def nbytes(self) -> int:
        """Memory the bases take (what every worker holds beside its model)."""
        tensors = [v.taus for v in self.vectors.values()]
        tensors += [t for m in self.matrices.values() for t in (m.U, m.S, m.Vh)]
        return sum(t.numel() * t.element_size() for t in tensors)


def keep_rank(s: torch.Tensor, *, energy: float, rtol: float) -> int:
    """How many singular values to keep.

    Values below ``rtol * s_max`` are numerical noise: ``theta_expert - theta_base`` in float32
    carries rounding noise in every direction, so a merged LoRA expert's rank-16 task vector only
    shows its 16 values once that floor is cut (1e-6 measured full rank, 1e-4 rank 16).
    ``energy < 1`` additionally keeps the smallest prefix whose squared singular values reach
    that fraction of the total (the lever that trades fidelity for speed).
    """
    if s.numel() == 0 or float(s[0]) <= 0.0:
        return 0
    rank = int((s > rtol * s[0]).sum())
    if energy < 1.0:
        power = s[:rank].double().square()
        cumulative = torch.cumsum(power, 0) / power.sum()
        rank = min(rank, int(torch.searchsorted(cumulative, torch.tensor(energy).double())) + 1)
    return rank


def polar_factor(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor ``P Q^T`` of ``a = P S Q^T``: nearest orthonormal columns."""
    p, _, qh = torch.linalg.svd(a, full_matrices=False)
    return p @ qh


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """The 2-D view used for SVD: ``(out, in * kh * kw ...)`` for convolution kernels."""
    return tensor.reshape(tensor.shape[0], -1)


def _expert_svd(
    expert: StateSource, name: str, theta0: torch.Tensor, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``U, S, Vh`` of one expert's task vector on tensor ``name`` (2-D view), and the dense task
    vector when it was formed (None for an adapter: its SVD comes from its factors, exactly)."""
    matrix = as_matrix(theta0)
    if isinstance(expert, LowRankSource):
        low = expert.factors(name)
        if low is None:  # a module the adapter leaves alone: rank 0
            m, n = matrix.shape
            empty = torch.zeros(0, device=theta0.device)
            return matrix.new_zeros(m, 0), empty, matrix.new_zeros(0, n), None
        u, s, vh = low_rank_svd(low.left.to(device), low.right.to(device))
        return u, s, vh, None
    tau = as_matrix(expert.get(name).to(device=device, dtype=torch.float32)) - matrix
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    return u, s, vh, tau


def build_basis(
    base: StateSource,
    experts: Mapping[str, StateSource],
    *,
    energy: float = 1.0,
    rtol: float = 1e-4,
    kind: str = "svd",
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
) -> ExpertBasis:
    """Compute every expert's task vector and its SVD, streaming one tensor at a time.

    A LoRA adapter expert (:class:`~cycleqd.merging.adapters.LowRankSource`) gives its SVD from
    its factors, exactly, and a zero task vector wherever it adapts nothing.
    """
    check_compatible(base, experts)
    if kind not in ("svd", "tsv"):
        raise CycleQDError(f"basis.kind: unknown basis kind {kind!r} (known: svd, tsv)")
    names = list(experts)
    basis = ExpertBasis(experts=names, kind=kind)
    err2 = dict.fromkeys(names, 0.0)
    norm2 = dict.fromkeys(names, 0.0)
    floating = [n for n in base.keys() if base.dtype(n).is_floating_point]  # noqa: SIM118
    for step, tensor_name in enumerate(sorted(floating)):
        theta0 = base.get(tensor_name).to(device=device, dtype=torch.float32)
        shape = tuple(theta0.shape)
        if theta0.dim() >= 2:
            us, ss, vhs, offsets = [], [], [], [0]
            dense: list[torch.Tensor | None] = []
            for e in names:
                u, s, vh, tau = _expert_svd(experts[e], tensor_name, theta0, device)
                r = keep_rank(s, energy=energy, rtol=rtol)
                us.append(u[:, :r])
                ss.append(s[:r])
                vhs.append(vh[:r])
                offsets.append(offsets[-1] + r)
                dense.append(tau)
            u_cat, vh_cat = torch.cat(us, 1), torch.cat(vhs, 0)
            if kind == "tsv" and offsets[-1] > 0:
                u_cat, vh_cat = polar_factor(u_cat), polar_factor(vh_cat.T).T
                for e, tau in enumerate(dense):
                    if tau is None:  # an adapter's factors: formed only where TSV needs them
                        low = experts[names[e]].factors(tensor_name)  # type: ignore[attr-defined]
                        tau = (
                            (low.left.to(device) @ low.right.to(device))
                            if low is not None
                            else torch.zeros_like(as_matrix(theta0))
                        )
                    sl = slice(offsets[e], offsets[e + 1])
                    approx = (u_cat[:, sl] * ss[e]) @ vh_cat[sl]
                    err2[names[e]] += float((approx - as_matrix(tau)).square().sum())
                    norm2[names[e]] += float(tau.square().sum())
            basis.matrices[tensor_name] = MatrixBasis(
                shape=shape,
                U=u_cat.contiguous().cpu(),
                S=torch.cat(ss).cpu(),
                Vh=vh_cat.contiguous().cpu(),
                offsets=offsets,
            )
        else:
            taus = [
                torch.zeros_like(theta0)
                if isinstance(experts[e], LowRankSource)  # adapters leave 1-D tensors alone
                else experts[e].get(tensor_name).to(device=device, dtype=torch.float32) - theta0
                for e in names
            ]
            basis.vectors[tensor_name] = VectorBasis(
                shape=shape, taus=torch.stack([t.reshape(-1) for t in taus]).cpu()
            )
        if progress is not None:
            progress(step + 1, len(floating), tensor_name)
    basis.fidelity = {n: (err2[n] / norm2[n]) ** 0.5 if norm2[n] > 0 else 0.0 for n in names}
    return basis


def basis_key(
    base: StateSource,
    experts: Mapping[str, StateSource],
    *,
    energy: float,
    rtol: float,
    kind: str = "svd",
) -> str:
    """Cache key: content of every checkpoint, expert order, truncation settings and kind."""
    digest = hashlib.sha256()
    digest.update(f"v{BASIS_FORMAT}|{energy!r}|{rtol!r}|{base.fingerprint()}".encode())
    if kind != "svd":  # plain SVD bases keep the keys they always had
        digest.update(f"|kind={kind}".encode())
    for name, source in experts.items():
        digest.update(f"|{name}={source.fingerprint()}".encode())
    return digest.hexdigest()[:32]


def save_basis(basis: ExpertBasis, path: Path) -> None:
    """Write a basis as one safetensors file (atomically: a killed write leaves no cache entry)."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, object] = {
        "format": BASIS_FORMAT,
        "experts": basis.experts,
        "kind": basis.kind,
        "fidelity": basis.fidelity,
        "matrices": {},
    }
    for name, m in basis.matrices.items():
        tensors[f"U::{name}"] = m.U.contiguous()
        tensors[f"S::{name}"] = m.S.contiguous()
        tensors[f"Vh::{name}"] = m.Vh.contiguous()
        meta["matrices"][name] = {"shape": list(m.shape), "offsets": m.offsets}  # type: ignore[index]
    vectors = {}
    for name, v in basis.vectors.items():
        tensors[f"tau::{name}"] = v.taus.contiguous()
        vectors[name] = list(v.shape)
    meta["vectors"] = vectors
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"cycleqd": json.dumps(meta)})
    os.replace(tmp, path)


def load_basis(path: Path, fingerprint: str = "") -> ExpertBasis:
    """Read a basis written by :func:`save_basis`."""
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["cycleqd"])
    except Exception as exc:
        raise CycleQDError(f"{path}: unreadable basis cache file ({exc}); delete it") from exc
    if meta.get("format") != BASIS_FORMAT:
        raise CycleQDError(f"{path}: basis cache format {meta.get('format')} is not supported")
    basis = ExpertBasis(
        experts=list(meta["experts"]),
        fingerprint=fingerprint,
        kind=meta.get("kind", "svd"),
        fidelity=dict(meta.get("fidelity") or {}),
    )
    for name, info in meta["matrices"].items():
        basis.matrices[name] = MatrixBasis(
            shape=tuple(info["shape"]),
            U=tensors[f"U::{name}"],
            S=tensors[f"S::{name}"],
            Vh=tensors[f"Vh::{name}"],
            offsets=list(info["offsets"]),
        )
    for name, shape in meta["vectors"].items():
        basis.vectors[name] = VectorBasis(shape=tuple(shape), taus=tensors[f"tau::{name}"])
    return basis


def default_cache_dir() -> Path:
    """``$CYCLEQD_CACHE`` or ``$XDG_CACHE_HOME/cycleqd`` (``~/.cache/cycleqd``)."""
    if os.environ.get("CYCLEQD_CACHE"):
        return Path(os.environ["CYCLEQD_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "cycleqd"


def load_or_build_basis(
    base: StateSource,
    experts: Mapping[str, StateSource],
    *,
    energy: float = 1.0,
    rtol: float = 1e-4,
    kind: str = "svd",
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
) -> ExpertBasis:
    """The cached basis for these checkpoints, computing and storing it on a miss."""
    check_compatible(base, experts)
    key = basis_key(base, experts, energy=energy, rtol=rtol, kind=kind)
    path = (cache_dir or default_cache_dir()) / "bases" / f"{key}.safetensors"
    if path.is_file():
        return load_basis(path, fingerprint=key)
    basis = build_basis(
        base, experts, energy=energy, rtol=rtol, kind=kind, device=device, progress=progress
    )
    basis.fingerprint = key
    save_basis(basis, path)
    return basis
