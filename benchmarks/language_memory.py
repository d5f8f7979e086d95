"""Resident memory of the demo's language column on vLLM: likelihoods in one call or in chunks.

The language column scores every choice of every question by vLLM's prompt log-probabilities.
Asked in one call, the process grew by about 1 GB of native memory that was freed but kept by
glibc until the next ``malloc_trim``; cycleqd now asks ``SCORE_CHUNK`` sequences per call and
trims between calls (``cycleqd.models.vllm_engine``). This scores the base model's language column
as the demo's test evaluation does (the `cpu` preset's question sample, one engine already warm
from the code test split) and prints one JSON line: resident GB before, at the peak, after, and
after a trim, the seconds, the accuracy and the allocator (TCMalloc, as the demo runs, where
the machine has it; ``CYCLEQD_ALLOCATOR=system`` for glibc's). ``--chunk 0`` asks all sequences
in one call (cycleqd before); ``--no-trim`` keeps the chunks but never trims between them.

Usage::

    python benchmarks/language_memory.py [--out DIR] [--chunk 64] [--no-trim]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    from cycleqd.allocator import restart_with_preferred

    restart_with_preferred()  # the allocator the demo runs on (CYCLEQD_ALLOCATOR=system: glibc's)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/language-memory"))
    parser.add_argument("--chunk", type=int, default=None, help="sequences per call (0: all)")
    parser.add_argument("--no-trim", action="store_true", help="no malloc_trim between chunks")
    args = parser.parse_args()

    from demo_inputs import say

    from cycleqd.allocator import in_use
    from cycleqd.demo.pipeline import Demo, DemoSettings
    from cycleqd.demo.presets import PRESETS
    from cycleqd.models import vllm_engine
    from cycleqd.models.engines import EngineSlot
    from cycleqd.resources import peak_rss_bytes, release_memory, reset_peak, rss_bytes

    if args.chunk is not None:
        vllm_engine.SCORE_CHUNK = args.chunk or 1 << 30
    if args.no_trim:
        vllm_engine.release_memory = lambda: None

    def gb(n: int) -> float:
        return round(n / 1e9, 2)

    demo = Demo(DemoSettings(out=args.out, preset=PRESETS["cpu"], language=True), say=say)
    base, data, questions = demo.model(), demo.data(), demo.language_file()
    shutil.rmtree(args.out / "test", ignore_errors=True)  # measured afresh, never reused
    with EngineSlot() as slot:
        demo.evaluate("warm", base, {"code": data["code"]["test"]}, "test", slot=slot)
        release_memory()
        reset_peak()
        before, started = rss_bytes(), time.perf_counter()
        report = demo.evaluate("language", base, {}, "test", language=questions, slot=slot)
        seconds, peak, after = time.perf_counter() - started, peak_rss_bytes(), rss_bytes()
        release_memory()
        print(
            json.dumps(
                {
                    "benchmark": "language_memory",
                    "allocator": in_use(),
                    "score_chunk": vllm_engine.SCORE_CHUNK,
                    "trim_between_chunks": not args.no_trim,
                    "before_gb": gb(before),
                    "peak_gb": gb(peak),
                    "after_gb": gb(after),
                    "trimmed_gb": gb(rss_bytes()),
                    "seconds": round(seconds, 1),
                    "accuracy": report["tasks"]["language"]["quality"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
