"""A stage's peak memory is its own: resetting the high-water mark forgets an earlier peak."""

from __future__ import annotations

import sys

import pytest

from cycleqd.resources import peak_rss_bytes, reset_peak


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
