"""Seconds and peak resident memory of the demo's merge baselines, on the allocator in use.

Builds the `cpu` preset's merges (task arithmetic at weights 1/3 and 1, TIES, DARE-TIES) of the
demo's cached experts into a temporary folder, as the demo's merge stage does, and prints one
JSON line: the allocator, the seconds and the peak. It runs on TCMalloc as the demo does, where
the machine has it (``CYCLEQD_ALLOCATOR=system``: glibc's malloc); ``--keep-freed`` leaves
TCMalloc's freed memory with it during the merges (cycleqd before ``returning_freed_memory``).

Usage::

    python benchmarks/merge_memory.py [--experts-cache DIR] [--keep-freed]

The experts come from the demo's cache (``make demo`` trains them); run it with nothing else on
the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from demo_inputs import say


def main() -> None:
    from cycleqd.allocator import restart_with_preferred

    restart_with_preferred()  # the allocator the demo runs on (CYCLEQD_ALLOCATOR=system: glibc's)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts-cache", type=Path, default=None, help="default: the demo's")
    parser.add_argument("--keep-freed", action="store_true", help="TCMalloc keeps freed memory")
    args = parser.parse_args()

    import cycleqd.merging.baselines as baselines
    from cycleqd.allocator import in_use
    from cycleqd.demo.baselines import build_merges
    from cycleqd.demo.pipeline import Demo, DemoSettings
    from cycleqd.demo.presets import PRESETS
    from cycleqd.demo.skills import SKILLS
    from cycleqd.resources import peak_rss_bytes, reset_peak

    if args.keep_freed:
        baselines.returning_freed_memory = nullcontext
    preset = PRESETS["cpu"]
    with tempfile.TemporaryDirectory(prefix="merge-memory-") as tmp:
        settings = DemoSettings(out=Path(tmp), preset=preset, experts_cache=args.experts_cache)
        demo = Demo(settings, say=say)
        base = demo.model()
        experts = {skill: demo._expert_dir(f"expert-{skill}") for skill in SKILLS}
        missing = [str(d) for d in experts.values() if not (d / "config.json").is_file()]
        if missing:
            sys.exit(f"no trained expert in {', '.join(missing)}: run `make demo` first")
        reset_peak()
        started = time.perf_counter()
        build_merges(Path(tmp) / "baselines", base, experts, preset.merges, [preset.seed], say)
        seconds = time.perf_counter() - started
    record = {
        "benchmark": "merge_memory",
        "allocator": in_use(),
        "freed_memory_returned": in_use() == "tcmalloc" and not args.keep_freed,
        "merges": list(preset.merges),
        "seconds": round(seconds, 1),
        "peak_gb": round(peak_rss_bytes() / 1e9, 2),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
