"""One door to the resident engines: ``engine.kind`` picks transformers or vLLM.

Callers (the search's session, ``cycleqd eval``) hand over the engine section of their config as
keywords, so a new setting reaches every engine without touching them.
"""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path
from typing import Any

from cycleqd.models.checkpoints import adapter_base
from cycleqd.models.engine import HFEngine
from cycleqd.models.vllm_engine import VLLMEngine

# Files beside the weights that decide how an engine reads prompts and ends replies.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)
# config.json keys that name or describe a checkpoint without changing the architecture.
_CONFIG_NOISE = ("_name_or_path", "transformers_version", "use_cache")


def open_engine(
    model_dir: Path,
    *,
    kind: str = "hf",
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 16,
    population_batch_size: int | None = None,
    vllm_kv_cache_gb: float = 2.0,
    vllm_max_model_len: int | None = None,
    vllm_compile: bool = True,
    seed: int = 0,
) -> HFEngine | VLLMEngine:
    """The engine ``kind`` names, holding ``model_dir`` (a model or a peft adapter)."""
    if kind == "vllm":
        return VLLMEngine(
            model_dir,
            device=device,
            dtype=dtype,
            kv_cache_gb=vllm_kv_cache_gb,
            max_model_len=vllm_max_model_len,
            compile=vllm_compile,
            seed=seed,
        )
    if kind != "hf":
        raise ValueError(f"engine.kind: unknown engine {kind!r} (known: hf, vllm)")
    return HFEngine(
        model_dir,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        population_batch_size=population_batch_size,
    )


def close_engine(engine: HFEngine | VLLMEngine | None) -> None:
    """Hand back what ``engine`` holds outside Python's garbage collector (vLLM's engine core and
    its KV cache; a transformers engine holds nothing of the kind), then collect."""
    if isinstance(engine, VLLMEngine):
        engine.close()
    gc.collect()


def model_signature(model_dir: Path) -> str:
    """A digest of what an engine is built for: the architecture (``config.json`` bar names),
    the checkpoint dtype and the tokenizer and generation files. Two models with the same
    signature can take turns in one engine, their weights written in place."""
    model_dir = Path(model_dir)
    base = adapter_base(model_dir) or model_dir
    config = json.loads((base / "config.json").read_text())
    for key in _CONFIG_NOISE:
        config.pop(key, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in _TOKENIZER_FILES:
        own = model_dir / name
        file = own if own.is_file() else base / name
        h.update(f"\0{name}\0".encode())
        h.update(file.read_bytes() if file.is_file() else b"-")
    return h.hexdigest()


class EngineSlot:
    """At most one open engine, handed each next model it can hold (vLLM: weights written in
    place), opened anew otherwise.

    Why: starting a vLLM engine costs about 50 s on a 2-core CPU, as much as scoring the demo's
    135M model on its test tasks, and each engine started in a process leaves about 0.4 GB
    behind even when closed (``benchmarks/engine_memory.py``); the demo searches and then scores
    ten models of one architecture, all in one slot. Closing the slot closes its engine.
    """

    def __init__(self) -> None:
        self._engine: HFEngine | VLLMEngine | None = None
        self._key: tuple[str, str] | None = None
        self.opened = 0  # engines started (the rest of the models were written in)

    def open(self, model_dir: Path, settings: dict[str, Any]) -> HFEngine | VLLMEngine:
        """An engine holding ``model_dir``; ``settings`` are :func:`open_engine`'s keywords."""
        # the seed only moves sampling, and every generation here is greedy: a search's engine
        # (seeded by its run) serves the evaluations after it
        shared = {k: v for k, v in settings.items() if k != "seed"}
        key = (json.dumps(shared, sort_keys=True, default=str), model_signature(model_dir))
        engine = self._engine
        if isinstance(engine, VLLMEngine) and key == self._key:
            engine.load_model(Path(model_dir))
            return engine
        self.close()
        self._engine = open_engine(Path(model_dir), **settings)
        self._key = key
        self.opened += 1
        return self._engine

    def close(self) -> None:
        engine, self._engine, self._key = self._engine, None, None
        close_engine(engine)

    def __enter__(self) -> EngineSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
