"""Multi-LoRA on vLLM: what several children as adapters in one batch cost against the plain model.

Why: on a GPU, K children of a search could run as K LoRA adapters in one vLLM engine with
continuous batching, instead of one weight swap per child. Whether that pays depends on what a
LoRA batch step costs beside a plain one. Here, on SmolLM2-135M-Instruct in bfloat16: 32 prompts,
32 new tokens each, timed (after a warm-up call) on an engine without LoRA, then on an engine with
``enable_lora`` with no adapter, with one adapter for every prompt, and with ``--adapters``
adapters mixed in the batch. Adapters are random peft LoRAs on every linear module of the model
(``--rank``; vLLM accepts ``max_lora_rank`` 1, 8, 16, 32, 64, ...). Prints one JSON line with
seconds per call and each LoRA case's ratio to the plain engine.

Usage::

    python benchmarks/vllm_multi_lora.py [--rank 16] [--adapters 4] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def write_adapters(model: Path, out: Path, n: int, rank: int) -> list[Path]:
    """``n`` seeded random peft adapters of ``rank`` on every linear module of ``model``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for i in range(n):
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        lora = get_peft_model(
            base, LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear")
        )
        gen = torch.Generator().manual_seed(i)
        for name, param in lora.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: the adapter would change nothing
                param.data = 0.01 * torch.randn(param.shape, generator=gen)
        lora.save_pretrained(out / f"adapter{i}")
        dirs.append(out / f"adapter{i}")
    return dirs


def timed(llm: Any, prompts: list[str], params: Any, lora: Any = None) -> float:
    llm.generate(prompts, params, lora_request=lora, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
    return round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="vLLM's torch.compile (default off)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from cycleqd.models.zoo import resolve_model

    model = resolve_model("smollm2-135m-instruct", fetch_missing=True)
    max_rank = next(r for r in (8, 16, 32, 64, 128, 256, 512) if r >= args.rank)
    prompts = [f"Write a short poem about the number {i}." for i in range(32)]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    common = {
        "model": str(model),
        "dtype": "bfloat16",
        "max_model_len": 1024,
        "kv_cache_memory_bytes": 2 << 30,
        "enforce_eager": not args.compile,
        "seed": 0,
    }
    out: dict[str, Any] = {"benchmark": "vllm_multi_lora", "rank": args.rank}
    out |= {"adapters": args.adapters, "compile": args.compile}
    plain = LLM(**common)
    out["plain_s"] = timed(plain, prompts, params)
    del plain
    with tempfile.TemporaryDirectory(prefix="cqd-lora-") as tmp:
        dirs = write_adapters(Path(model), Path(tmp), args.adapters, args.rank)
        llm = LLM(**common, enable_lora=True, max_loras=args.adapters, max_lora_rank=max_rank)
        requests = [LoRARequest(f"a{i}", i + 1, str(d)) for i, d in enumerate(dirs)]
        out["lora_engine_no_adapter_s"] = timed(llm, prompts, params)
        out["one_adapter_s"] = timed(llm, prompts, params, [requests[0]] * len(prompts))
        mixed = [requests[i % len(requests)] for i in range(len(prompts))]
        out["mixed_adapters_s"] = timed(llm, prompts, params, mixed)
    for key in ("lora_engine_no_adapter_s", "one_adapter_s", "mixed_adapters_s"):
        out[key.removesuffix("_s") + "_ratio"] = round(out[key] / out["plain_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
