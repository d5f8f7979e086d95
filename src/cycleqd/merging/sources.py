"""Where weights come from: a lazily read checkpoint or an in-memory state dict.

The merging layer only needs names, shapes and one tensor at a time, so large experts are streamed
tensor by tensor from safetensors instead of being loaded whole; any PyTorch model's state dict
works the same way (the merging layer knows nothing about language models).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open

from cycleqd.errors import CycleQDError
from cycleqd.hashing import hash_file


class StateSource(Protocol):
    """Read access to one model's named tensors."""

    label: str

    def keys(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> torch.dtype: ...

    def get(self, name: str) -> torch.Tensor: ...

    def fingerprint(self) -> str:
        """A content hash: bases are cached under the fingerprints of base and experts."""
        ...


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


_Entry = tuple[tuple[int, ...], torch.dtype, tuple[int, int]]
"""One tensor in a safetensors header: shape, dtype and absolute byte range in its file."""


class SafetensorsSource:
    """A Hugging Face style model directory (``model.safetensors`` or a sharded index)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        if not self.path.is_dir():
            raise CycleQDError(f"model directory not found: {self.path}")
        index = self.path / "model.safetensors.index.json"
        single = self.path / "model.safetensors"
        self._where: dict[str, Path] = {}
        headers: dict[Path, dict[str, _Entry]] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise CycleQDError(f"{index}: not a valid safetensors index ({exc})") from exc
            for name, shard in weight_map.items():
                self._where[name] = self.path / shard
        elif single.is_file():
            headers[single] = self._header(single)
            self._where = dict.fromkeys(headers[single], single)
        else:
            raise CycleQDError(
                f"{self.path}: no model.safetensors or model.safetensors.index.json "
                "(save models with safe_serialization=True)"
            )
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._spans: dict[str, tuple[int, int]] = {}  # absolute byte range of each tensor
        for file in sorted(set(self._where.values())):
            header = headers[file] if file in headers else self._header(file)
            for name, (shape, dtype, span) in header.items():
                self._meta[name] = (shape, dtype)
                self._spans[name] = span
        missing = [n for n in self._where if n not in self._meta]
        if missing:
            raise CycleQDError(f"{self.path}: index names tensor {missing[0]!r} absent from shards")

    @staticmethod
    def _header(file: Path) -> dict[str, _Entry]:
        """Each tensor's shape, dtype and absolute byte range, from the header alone."""
        try:
            with file.open("rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(size))
        except (OSError, ValueError) as exc:
            raise CycleQDError(f"{file}: not a readable safetensors file ({exc})") from exc
        start = 8 + size
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            lo, hi = info["data_offsets"]
            dtype = _ST_DTYPES.get(info["dtype"], torch.float32)
            out[name] = (tuple(info["shape"]), dtype, (start + lo, start + hi))
        return out

    def read(self, name: str) -> torch.Tensor:
        """The tensor, read with plain file I/O into memory this process owns.

        Why not :meth:`get`: safetensors maps the file, and pages of a mapped file count in the
        process's resident memory for as long as they stay mapped. Read like this, a tensor
        costs its own bytes while it is used and the checkpoint stays in the page cache, which
        is what lets the materialiser keep no copy of the base beside the resident model.
        """
        lo, hi = self._spans[name]
        shape, dtype = self._meta[name]
        buffer = bytearray(hi - lo)
        with self._where[name].open("rb", buffering=0) as fh:
            fh.seek(lo)
            view = memoryview(buffer)
            got = 0
            while got < len(buffer):
                n = fh.readinto(view[got:])
                if not n:
                    raise CycleQDError(f"{self._where[name]}: truncated at tensor {name!r}")
                got += n
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)

    def keys(self) -> list[str]:
        return list(self._meta)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][0]

    def dtype(self, name: str) -> torch.dtype:
        return self._meta[name][1]

    def get(self, name: str) -> torch.Tensor:
        with safe_open(str(self._where[name]), framework="pt") as fh:
            return fh.get_tensor(name)

    def config(self) -> dict:
        """The model's ``config.json`` (empty when absent)."""
        file = self.path / "config.json"
        if not file.is_file():
            return {}
        try:
            return json.loads(file.read_text())
        except ValueError as exc:
            raise CycleQDError(f"{file}: not valid JSON ({exc})") from exc

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for file in sorted(set(self._where.values())):
            digest.update(file.name.encode())
            hash_file(digest, file)
        return digest.hexdigest()


class DictSource:
    """An in-memory state dict (any PyTorch model: CNNs, SAM-style encoders, tiny test nets)."""

    def __init__(self, state: Mapping[str, torch.Tensor], label: str = "<state dict>") -> None:
        self._state = {k: v.detach() for k, v in state.items()}
        self.label = label

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._state[name].dtype

    def get(self, name: str) -> torch.Tensor:
        return self._state[name]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self._state):
            tensor = self._state[name].contiguous().cpu()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def check_compatible(base: StateSource, experts: Mapping[str, StateSource]) -> None:
    """Refuse experts whose tensors do not line up with the base, before any compute.

    The error names the first offending tensor so the user can see which checkpoint is wrong
    (a different vocabulary, a different model size, a missing layer).
    """
    base_keys = base.keys()
    base_set = set(base_keys)
    base_cfg = base.config() if isinstance(base, SafetensorsSource) else {}
    for name, expert in experts.items():
        if isinstance(expert, SafetensorsSource) and base_cfg:
            cfg = expert.config()
            for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers"):
                if key in base_cfg and key in cfg and base_cfg[key] != cfg[key]:
                    raise CycleQDError(
                        f"expert {name!r} ({expert.label}) does not match the base model: "
                        f"config.json {key} is {cfg[key]!r}, base has {base_cfg[key]!r}"
                    )
        keys = set(expert.keys())
        for tensor in base_keys:
            if tensor not in keys:
                raise CycleQDError(
                    f"expert {name!r} ({expert.label}) does not match the base model: "
                    f"tensor {tensor!r} is missing"
                )
            if expert.shape(tensor) != base.shape(tensor):
                raise CycleQDError(
                    f"expert {name!r} ({expert.label}) does not match the base model: tensor "
                    f"{tensor!r} has shape {list(expert.shape(tensor))}, base has "
                    f"{list(base.shape(tensor))}"
                )
        extra = sorted(keys - base_set)
        if extra:
            raise CycleQDError(
                f"expert {name!r} ({expert.label}) does not match the base model: "
                f"tensor {extra[0]!r} is not in the base"
            )
