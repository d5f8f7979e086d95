"""peft LoRA adapters as experts: the task vector of every adapted module as exact factors.

A LoRA expert's task vector on a module is ``scale * B @ A`` (``scale = lora_alpha / r``, or
``lora_alpha / sqrt(r)`` with rsLoRA; ``rank_pattern`` / ``alpha_pattern`` per module): low
rank by construction. Its basis is therefore built from the factors (:func:`low_rank_svd`: QR of
``B`` and ``A^T`` and an ``r x r`` SVD, exact), never from a dense product of the size of the
model, and the adapter is never merged into a copy of the base. Everything else of the base is
unchanged by the adapter (its task vector is zero there).

What an adapter cannot be represented by exactly is refused before any work, with the file and
the key: DoRA (a per-column magnitude, not a low-rank sum), trained biases, ``modules_to_save``
(full copies of modules), other adapter kinds, and an adapter whose modules or shapes do not
match the base model (an adapter of another base).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors import safe_open

from cycleqd.errors import CycleQDError
from cycleqd.hashing import hash_file
from cycleqd.merging.sources import SafetensorsSource, StateSource

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B|embedding_A|embedding_B)(?:\.weight)?$")


@dataclass(frozen=True)
class LowRank:
    """A task vector ``left @ right`` in the tensor's 2-D view (scale folded into ``left``)."""

    left: torch.Tensor  # (m, r)
    right: torch.Tensor  # (r, n)


@runtime_checkable
class LowRankSource(Protocol):
    """An expert that can give its task vector of a tensor as factors (None: zero there)."""

    def factors(self, name: str) -> LowRank | None: ...


def low_rank_svd(
    left: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact thin SVD ``U diag(S) Vh`` of ``left @ right`` without forming the product.

    ``left = Q_b R_b`` and ``right^T = Q_a R_a`` (QR), so ``left @ right = Q_b (R_b R_a^T) Q_a^T``;
    the SVD of the small ``r x r`` middle gives the rest. Cost ``O((m + n) r^2)``, not ``O(m n r)``.
    """
    qb, rb = torch.linalg.qr(left)
    qa, ra = torch.linalg.qr(right.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    return qb @ u, s, vh @ qa.T


def is_adapter(path: Path) -> bool:
    """Whether ``path`` is a peft adapter directory (it holds ``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def open_expert(path: Path, base: StateSource) -> StateSource:
    """An expert checkpoint: a peft LoRA adapter over ``base``, or a full model directory."""
    if is_adapter(path):
        return LoraSource(path, base)
    return SafetensorsSource(path)


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's per-module override: the first pattern that matches the module's name's end."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


class LoraSource:
    """A peft LoRA adapter directory seen as an expert checkpoint of ``base``.

    It reads as the base plus the adapter (``get`` is dense, for callers that need a tensor);
    the basis asks :meth:`factors` instead and never builds the dense task vector.
    """

    def __init__(self, path: Path, base: StateSource) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self.base = base
        config_file = self.path / ADAPTER_CONFIG
        weights = self.path / ADAPTER_WEIGHTS
        try:
            self.config: dict[str, Any] = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise CycleQDError(f"{config_file}: not a readable adapter config ({exc})") from exc
        self._check_config(config_file)
        if not weights.is_file():
            raise CycleQDError(
                f"{self.path}: no {ADAPTER_WEIGHTS} (save adapters with safe_serialization=True)"
            )
        self._weights = weights
        self._factors = self._read_factors(weights)

    # -- validation --------------------------------------------------------------------------
    def _check_config(self, file: Path) -> None:
        cfg = self.config
        refusals = [
            (
                str(cfg.get("peft_type", "LORA")).upper() != "LORA",
                "peft_type",
                "only LoRA adapters have a low-rank task vector",
            ),
            (
                bool(cfg.get("use_dora")),
                "use_dora",
                "a DoRA adapter rescales every column of its modules, which no low-rank sum "
                "represents; merge it into a full checkpoint and give that as the expert",
            ),
            (
                str(cfg.get("bias", "none")) != "none",
                "bias",
                "trained biases are not part of a LoRA task vector; merge the adapter into a "
                "full checkpoint and give that as the expert",
            ),
            (
                bool(cfg.get("modules_to_save")),
                "modules_to_save",
                "fully trained modules are not low rank; merge the adapter into a full "
                "checkpoint and give that as the expert",
            ),
        ]
        for refused, key, why in refusals:
            if refused:
                raise CycleQDError(f"{file}: {key}: {why}")

    def _read_factors(self, weights: Path) -> dict[str, LowRank]:
        """Every adapted base tensor's factors, scaled; any key that does not fit is an error."""
        cfg = self.config
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        embeddings: set[str] = set()  # modules adapted through lora_embedding_A / _B
        base_keys = set(self.base.keys())
        with safe_open(str(weights), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if key.endswith(".base_layer.weight"):
                    self._check_saved_base_layer(key, fh.get_tensor(key), base_keys, weights)
                    continue
                match = _FACTOR.match(key)
                if match is None:
                    raise CycleQDError(
                        f"{weights}: tensor {key!r} is not a LoRA factor (lora_A / lora_B); "
                        "cycleqd takes plain LoRA adapters"
                    )
                which = match["which"].replace("embedding_", "")
                pairs.setdefault(match["module"], {})[which] = fh.get_tensor(key).float()
                if match["which"].startswith("embedding"):
                    embeddings.add(match["module"])
        out: dict[str, LowRank] = {}
        for module, parts in sorted(pairs.items()):
            if "A" not in parts or "B" not in parts:
                raise CycleQDError(f"{weights}: module {module!r} has only one of lora_A, lora_B")
            name = self._base_tensor(module, base_keys, weights)
            a, b = parts["A"], parts["B"]
            r = a.shape[0]  # the module's rank (rank_pattern's value where one applies)
            alpha = _pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", r))
            scale = float(alpha) / (r**0.5 if cfg.get("use_rslora") else r)
            left, right = b * scale, a
            # peft's delta is B @ A for a Linear; its transpose where the base stores (in, out):
            # GPT-2's Conv1D (fan_in_fan_out) and embeddings (lora_embedding_A is (r, vocab))
            if cfg.get("fan_in_fan_out") or module in embeddings:
                left, right = right.T, left.T
            shape = self.base.shape(name)
            view = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else shape
            if len(shape) < 2 or (left.shape[0], right.shape[1]) != view:
                raise CycleQDError(
                    f"{weights}: {module!r} gives a task vector of shape "
                    f"{[left.shape[0], right.shape[1]]} for base tensor {name!r} of shape "
                    f"{list(shape)} (an adapter of another base model?)"
                )
            out[name] = LowRank(left.contiguous(), right.contiguous())
        return out

    def _check_saved_base_layer(
        self, key: str, tensor: torch.Tensor, base_keys: set[str], weights: Path
    ) -> None:
        """peft saves a targeted embedding's own weight beside its factors (``save_embedding_
        layers``); it must be the base's, or the adapter carries a full retrained module."""
        module = key.removesuffix(".base_layer.weight")
        name = self._base_tensor(module, base_keys, weights)
        if tuple(tensor.shape) != self.base.shape(name):
            raise CycleQDError(
                f"{weights}: {key!r} has shape {list(tensor.shape)}, the base's {name!r} "
                f"{list(self.base.shape(name))} (an adapter of another base model?)"
            )
        if not torch.equal(tensor.to(self.base.dtype(name)), self.base.get(name)):
            raise CycleQDError(
                f"{weights}: {key!r} differs from the base's {name!r} (a resized or retrained "
                "module is not low rank); merge the adapter into a full checkpoint and give "
                "that as the expert"
            )

    def _base_tensor(self, module: str, base_keys: set[str], weights: Path) -> str:
        """The base checkpoint's weight of a peft module name (prefixes dropped as needed)."""
        path = module.removeprefix(_PREFIX)
        parts = path.split(".")
        for start in range(len(parts)):
            candidate = ".".join(parts[start:]) + ".weight"
            if candidate in base_keys:
                return candidate
        raise CycleQDError(
            f"{weights}: module {module!r} adapts {path + '.weight'!r}, which the base model "
            f"({self.base.label}) does not have (an adapter of another base model?)"
        )

    # -- StateSource -------------------------------------------------------------------------
    def factors(self, name: str) -> LowRank | None:
        return self._factors.get(name)

    def keys(self) -> list[str]:
        return self.base.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self.base.dtype(name)

    def get(self, name: str) -> torch.Tensor:
        theta = self.base.get(name)
        low = self._factors.get(name)
        if low is None:
            return theta
        delta = (low.left @ low.right).reshape(theta.shape)
        return (theta.float() + delta).to(theta.dtype)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"peft-lora\0")
        for file in (self.path / ADAPTER_CONFIG, self._weights):
            digest.update(file.name.encode() + b"\0")
            hash_file(digest, file)
        return digest.hexdigest()
