"""Resident memory of vLLM engines opened one after another, each closed or only dropped.

The demo opens one engine per stage (the search's, the test evaluation's, the real benchmarks')
in one process. Dropping the last reference to a vLLM engine leaves its in-process engine core,
and with it the KV cache, alive; ``VLLMEngine.close`` stops it. This opens ``--engines`` engines
on ``--model`` in turn, generates a few replies with each (so the KV cache is written), then
closes it (or, with ``--drop``, only deletes it, as cycleqd did before) and reads the process's
resident memory after each step, after collecting garbage and trimming the allocator.

Prints one JSON line per step and a summary line.

Usage::

    python benchmarks/engine_memory.py [--model DIR] [--engines 3] [--kv-cache-gb 1.0] [--drop]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = Path.home() / ".cache" / "cycleqd" / "models" / "smollm2-135m-instruct"
PROMPTS = ["Write a shell command that counts the files in /etc.", "What is 17 times 3?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--engines", type=int, default=3)
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--drop", action="store_true", help="delete engines without closing them")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model}: no model here (cycleqd demo fetches the default one)")

    from cycleqd.models.engines import open_engine
    from cycleqd.models.vllm_engine import vllm_available
    from cycleqd.resources import release_memory, rss_bytes

    if not vllm_available():
        sys.exit("vLLM is not installed (make vllm-engine)")

    def resident() -> float:
        release_memory()
        return round(rss_bytes() / 1e9, 3)

    start = resident()
    opened, closed = [], []
    for i in range(args.engines):
        engine = open_engine(args.model, kind="vllm", vllm_kv_cache_gb=args.kv_cache_gb)
        engine.generate(PROMPTS, max_new_tokens=32)
        opened.append(resident())
        print(json.dumps({"engine": i, "step": "open", "rss_gb": opened[-1]}), flush=True)
        if not args.drop:
            engine.close()
        del engine
        closed.append(resident())  # resident() collects garbage first
        step = "dropped" if args.drop else "closed"
        print(json.dumps({"engine": i, "step": step, "rss_gb": closed[-1]}), flush=True)
    print(
        json.dumps(
            {
                "benchmark": "engine_memory",
                "model": str(args.model),
                "mode": "drop" if args.drop else "close",
                "kv_cache_gb": args.kv_cache_gb,
                "rss_gb_at_start": start,
                "rss_gb_after_each_open": opened,
                "rss_gb_after_each_close": closed,
                "rss_gb_held_after_all": round(closed[-1] - start, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
