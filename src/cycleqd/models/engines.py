"""One door to the resident engines: ``engine.kind`` picks transformers or vLLM.

Callers (the search's session, ``cycleqd eval``) hand over the engine section of their config as
keywords, so a new setting reaches every engine without touching them.
"""

from __future__ import annotations

from pathlib import Path

from cycleqd.models.engine import HFEngine
from cycleqd.models.vllm_engine import VLLMEngine


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
