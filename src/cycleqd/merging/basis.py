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
import re
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
    ``offsets[e]:offsets[e+1]`` and its own genome is ``S`` on that slice. ``U`` and ``Vh`` are
    kept in a 16-bit checkpoint's dtype (:func:`stored_dtype`); use them widened to float32.
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
    # per expert, ||tau_e(genome) - tau_e|| / ||tau_e|| over the 2-D tensors: what truncation
    # (noise floors, energy, max_rank) or decorrelation (``tsv``) leaves out
    fidelity: dict[str, float] = field(default_factory=dict)
    # per expert, the median kept rank of each tensor group (see tensor_group)
    ranks: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Tensor names in a fixed order: random draws iterate over this, so it must be stable."""
        return sorted([*self.matrices, *self.vectors])

    def nbytes(self) -> int:
        """Memory the bases take (what every worker holds beside its model)."""
        tensors = [v.taus for v in self.vectors.values()]
        tensors += [t for m in self.matrices.values() for t in (m.U, m.S, m.Vh)]
        return sum(t.numel() * t.element_size() for t in tensors)


def keep_rank(
    s: torch.Tensor,
    *,
    energy: float,
    rtol: float,
    floor: float = 0.0,
    max_rank: int | None = None,
) -> int:
    """How many singular values to keep.

    Values below ``rtol * s_max`` are numerical noise: ``theta_expert - theta_base`` in float32
    carries rounding noise in every direction, so a merged LoRA expert's rank-16 task vector only
    shows its 16 values once that floor is cut (1e-6 measured full rank, 1e-4 rank 16). Values
    below ``floor`` are the rounding noise of a half-precision checkpoint
    (:func:`rounding_floor`). ``energy < 1`` additionally keeps the smallest prefix whose squared
    singular values reach that fraction of the total (the lever that trades fidelity for
    speed); ``max_rank`` caps the rank.
    """
    if s.numel() == 0 or float(s[0]) <= 0.0:
        return 0
    rank = int((s > max(rtol * float(s[0]), floor)).sum())
    if energy < 1.0:
        power = s[:rank].double().square()
        cumulative = torch.cumsum(power, 0) / power.sum()
        rank = min(rank, int(torch.searchsorted(cumulative, torch.tensor(energy).double())) + 1)
    return rank if max_rank is None else min(rank, max_rank)


# Explicit mantissa bits of the half-precision checkpoint dtypes.
_MANTISSA = {torch.bfloat16: 7, torch.float16: 10}
# Margin over the predicted largest noise singular value: measured on bf16 and fp16 LoRA-merged
# matrices from 64x64 to 4096x1024, the prediction was 0.96-1.07 of the measured value.
FLOOR_MARGIN = 1.5


def rounding_floor(expert: torch.Tensor) -> float:
    """The largest singular value the rounding of a half-precision checkpoint adds, with margin.

    Storing ``theta_base + tau`` in bfloat16 (float16) rounds every weight by up to half an ulp,
    uniformly: noise of RMS ``ulp / sqrt(12)`` in every entry, whose largest singular value is
    about ``RMS * (sqrt(m) + sqrt(n))`` (the Marchenko-Pastur edge). Measured, not guessed: on
    LoRA-merged bf16 and fp16 matrices (64x64 to 4096x1024) this predicted the noise's largest
    singular value to within 7% (0.6% from 512 up), while the LoRA's own values stood 30x to
    1000x above it; ``rtol * s_max`` sat below the noise, so every such expert looked full rank.
    Zero for float32 checkpoints (their rounding is what ``rtol`` covers).
    """
    bits = _MANTISSA.get(expert.dtype)
    if bits is None:
        return 0.0
    matrix = as_matrix(expert).float()
    magnitude = matrix.abs().clamp_min(torch.finfo(expert.dtype).tiny)
    ulp = torch.exp2(torch.floor(torch.log2(magnitude)) - bits)
    rms = float(ulp.square().mean().sqrt()) / 12**0.5
    m, n = matrix.shape
    return FLOOR_MARGIN * rms * (m**0.5 + n**0.5)


def polar_factor(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor ``P Q^T`` of ``a = P S Q^T``: nearest orthonormal columns."""
    p, _, qh = torch.linalg.svd(a, full_matrices=False)
    return p @ qh


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """The 2-D view used for SVD: ``(out, in * kh * kw ...)`` for convolution kernels."""
    return tensor.reshape(tensor.shape[0], -1)


@dataclass
class _ExpertSVD:
    """One expert's SVD of one tensor: its factors, the dense task vector when one was formed
    (None for an adapter), the half-precision noise floor and the task vector's squared norm."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    tau: torch.Tensor | None
    floor: float
    norm2: float
    complete: bool = True  # every singular value is here (not a randomized leading few)

    def discarded(self, rank: int) -> float:
        """The squared Frobenius norm of what keeping ``rank`` directions leaves out (from the
        dropped values themselves where all are known: a difference of sums would lose it to
        cancellation)."""
        if self.complete:
            return float(self.s[rank:].double().square().sum())
        return max(0.0, self.norm2 - float(self.s[:rank].double().square().sum()))


def _expert_svd(
    expert: StateSource,
    name: str,
    theta0: torch.Tensor,
    device: str | torch.device,
    max_rank: int | None,
) -> _ExpertSVD:
    """The SVD of one expert's task vector on tensor ``name`` (2-D view).

    An adapter's comes from its factors, exactly. A full expert's task vector is formed once: a
    zero one costs no SVD; with a ``max_rank`` far below the tensor's size a randomized SVD
    (``torch.svd_lowrank``) finds the leading directions; otherwise a full thin SVD.
    """
    matrix = as_matrix(theta0)
    m, n = matrix.shape
    empty = _ExpertSVD(
        matrix.new_zeros(m, 0), matrix.new_zeros(0), matrix.new_zeros(0, n), None, 0.0, 0.0
    )
    if isinstance(expert, LowRankSource):
        low = expert.factors(name)
        if low is None:  # a module the adapter leaves alone: rank 0
            return empty
        u, s, vh = low_rank_svd(low.left.to(device), low.right.to(device))
        return _ExpertSVD(u, s, vh, None, 0.0, float(s.double().square().sum()))
    raw = expert.get(name)
    tau = as_matrix(raw.to(device=device, dtype=torch.float32)) - matrix
    if not bool(tau.any()):
        empty.tau = tau
        return empty
    floor = rounding_floor(raw.to(device))
    norm2 = float(tau.double().square().sum())
    if max_rank is not None and max_rank < min(m, n) // 4:
        u, s, v = torch.svd_lowrank(tau, q=min(max_rank + 8, min(m, n)), niter=4)
        return _ExpertSVD(u, s, v.T, tau, floor, norm2, complete=False)
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    return _ExpertSVD(u, s, vh, tau, floor, norm2)


def build_basis(
    base: StateSource,
    experts: Mapping[str, StateSource],
    *,
    energy: float = 1.0,
    rtol: float = 1e-4,
    kind: str = "svd",
    max_rank: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
) -> ExpertBasis:
    """Compute every expert's task vector and its SVD, streaming one tensor at a time.

    Kept per expert and tensor: the singular values above the noise (``rtol * s_max``, and the
    rounding floor of half-precision checkpoints), the ``energy`` prefix, at most ``max_rank``.
    ``fidelity`` records what that truncation loses (relative Frobenius error over the 2-D task
    vectors) and ``ranks`` the median kept rank per tensor group (``self_attn.q_proj.weight``).

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
    kept: dict[str, dict[str, list[int]]] = {e: {} for e in names}
    floating = [n for n in base.keys() if base.dtype(n).is_floating_point]  # noqa: SIM118
    for step, tensor_name in enumerate(sorted(floating)):
        theta0 = base.get(tensor_name).to(device=device, dtype=torch.float32)
        shape = tuple(theta0.shape)
        if theta0.dim() >= 2:
            us, ss, vhs, offsets = [], [], [], [0]
            dense: list[torch.Tensor | None] = []
            for e in names:
                found = _expert_svd(experts[e], tensor_name, theta0, device, max_rank)
                r = keep_rank(
                    found.s, energy=energy, rtol=rtol, floor=found.floor, max_rank=max_rank
                )
                us.append(found.u[:, :r])
                ss.append(found.s[:r])
                vhs.append(found.vh[:r])
                offsets.append(offsets[-1] + r)
                dense.append(found.tau)
                kept[e].setdefault(tensor_group(tensor_name), []).append(r)
                if kind != "tsv":  # what the truncation leaves out of the expert's task vector
                    err2[e] += found.discarded(r)
                    norm2[e] += found.norm2
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
            store = stored_dtype(base.dtype(tensor_name))
            basis.matrices[tensor_name] = MatrixBasis(
                shape=shape,
                U=u_cat.to(store).contiguous().cpu(),
                S=torch.cat(ss).cpu(),
                Vh=vh_cat.to(store).contiguous().cpu(),
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
    basis.ranks = {
        e: {g: int(torch.tensor(r).median()) for g, r in sorted(groups.items())}
        for e, groups in kept.items()
    }
    return basis


def stored_dtype(checkpoint: torch.dtype) -> torch.dtype:
    """The dtype singular vectors are kept in: the checkpoint's own when it is 16-bit.

    Why: bases of full fine-tunes are the largest thing a run holds beside the model (docs/
    architecture.md), and vectors rounded to bf16 move a bf16 model's merged weights by far
    less than its own rounding (the task vector is small beside the weight, and the rounding
    floor already drops every direction below that noise). Singular values, 1-D task vectors
    and every product stay float32.
    """
    return checkpoint if checkpoint in (torch.bfloat16, torch.float16) else torch.float32


def tensor_group(name: str) -> str:
    """A tensor's name without its layer index (``model.layers.3.mlp.up_proj.weight`` ->
    ``model.layers.*.mlp.up_proj.weight``): ranks are reported per group of like tensors."""
    return re.sub(r"\.\d+\.", ".*.", name)


def basis_key(
    base: StateSource,
    experts: Mapping[str, StateSource],
    *,
    energy: float,
    rtol: float,
    kind: str = "svd",
    max_rank: int | None = None,
) -> str:
    """Cache key: content of every checkpoint, expert order, truncation settings and kind."""
    digest = hashlib.sha256()
    digest.update(f"v{BASIS_FORMAT}|{energy!r}|{rtol!r}|{base.fingerprint()}".encode())
    digest.update(f"|floor={FLOOR_MARGIN}|max_rank={max_rank}|stored=checkpoint".encode())
    if kind != "svd":
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
        "ranks": basis.ranks,
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
        ranks={e: dict(g) for e, g in (meta.get("ranks") or {}).items()},
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
    max_rank: int | None = None,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
) -> ExpertBasis:
    """The cached basis for these checkpoints, computing and storing it on a miss."""
    check_compatible(base, experts)
    key = basis_key(base, experts, energy=energy, rtol=rtol, kind=kind, max_rank=max_rank)
    path = (cache_dir or default_cache_dir()) / "bases" / f"{key}.safetensors"
    if path.is_file():
        return load_basis(path, fingerprint=key)
    basis = build_basis(
        base,
        experts,
        energy=energy,
        rtol=rtol,
        kind=kind,
        max_rank=max_rank,
        device=device,
        progress=progress,
    )
    basis.fingerprint = key
    save_basis(basis, path)
    return basis
