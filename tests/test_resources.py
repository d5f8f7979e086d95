"""A stage's peak memory is its own: resetting the high-water mark forgets an earlier peak, and
memory a stage freed goes back to the OS."""

from __future__ import annotations

import sys

import pytest
import torch

from cycleqd.resources import peak_rss_bytes, release_memory, reset_peak, rss_bytes


@pytest.mark.skipif(sys.platform != "linux", reason="per-stage peaks need Linux's clear_refs")
def test_the_peak_of_a_stage_forgets_the_stage_before() -> None:
    assert reset_peak()
    block = bytearray(400 * 2**20)  # 400 MiB, touched
    block[::4096] = b"x" * len(block[::4096])
    high = peak_rss_bytes()
    del block
    assert reset_peak()
    low = peak_rss_bytes()
    assert high - low > 300 * 2**20, (high, low)
    assert low > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_memory_hands_freed_heap_memory_back() -> None:
    """Small blocks come from glibc's heap; freed with every eighth still alive, the heap cannot
    shrink by itself, and the process keeps their pages until the memory is released."""
    blocks = [torch.ones(16 * 1024) for _ in range(6000)]  # 64 KiB each, 375 MiB in all
    kept = blocks[::8]
    del blocks
    held = rss_bytes()
    release_memory()
    assert held - rss_bytes() > 150 * 2**20
    assert len(kept) == 750


def _capacity_after_import(env: dict[str, str]) -> str:
    """``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` as a fresh interpreter has it after importing cycleqd."""
    import os
    import subprocess

    code = "import os, cycleqd; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    base = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_cycleqd_bounds_onednn_kernel_cache_unless_the_user_set_it() -> None:
    """The bound is in place before any matmul (oneDNN reads it once); a user's value wins."""
    from cycleqd.resources import KERNEL_CACHE_CAPACITY

    assert _capacity_after_import({}) == str(KERNEL_CACHE_CAPACITY)
    assert _capacity_after_import({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "7"}) == "7"
