"""Where and in what dtype a model computes: shared by the engines and training.

Kept apart from :mod:`cycleqd.models.engine` so the prompt encoder that every engine builds on
can settle an engine's device and dtype without importing an engine.
"""

from __future__ import annotations

import torch

from cycleqd.models.checkpoints import DTYPES


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (``auto``), else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matmuls in hardware (AVX512-BF16 or AMX).

    There, bf16 halves the bytes a memory-bound decoding step reads and prefill runs about 2.8x
    faster (SmolLM2-135M, 2 cores); elsewhere bf16 is emulated and slower than float32.
    """
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers: absent in some torch builds
        return False


def bf16_is_fast(device: torch.device) -> bool:
    """bfloat16 pays off on a GPU and on CPUs with native bf16; elsewhere float32 is faster."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def pick_dtype(
    dtype: str, device: torch.device, checkpoint: torch.dtype = torch.float32
) -> torch.dtype:
    """The dtype the resident model computes in.

    ``auto``: on a GPU the checkpoint's own 16-bit dtype (an fp16 model is not rounded to bf16),
    bfloat16 for a float32 checkpoint; on a CPU with native bf16, bfloat16; elsewhere float32,
    since emulated bf16 is slower than float32.
    """
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda" and checkpoint in (torch.bfloat16, torch.float16):
        return checkpoint
    return torch.bfloat16 if bf16_is_fast(device) else torch.float32
