"""How much faster is an evaluation with the in-place growing KV cache, and is it the same?

Scores one demo expert (its own genome, materialised) on the demo's *validation* splits with the
engine's growing cache (:mod:`cycleqd.models.kv_cache`) and with transformers' concatenating
cache, alternating the two ``--repeats`` times so that drift in the machine's speed falls on both
alike. Reports each path's seconds per evaluation (the best and every repeat), the speed-up, and
how many samples' transcripts differ between the paths (target: none; the cache holds the same
numbers, so greedy decoding must not change).

Prints one JSON line.

Usage::

    python benchmarks/kv_cache.py [--expert os] [--repeats 2] [--n-val N] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--expert", default="os", help="code, os or db")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-val", type=int, default=None)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    from demo_inputs import say, validation_config
    from eval_reproducibility import compare

    from cycleqd.merging.genome import expert_genome
    from cycleqd.search.executors.serial import GroupEvaluator
    from cycleqd.search.session import Session

    with tempfile.TemporaryDirectory(prefix="cqd-kv-") as tmp:
        config, preset = validation_config(
            Path(tmp), preset=args.preset, n_val=args.n_val, dtype=args.dtype
        )
        session = Session(config)
        genome = expert_genome(session.basis, list(session.basis.experts).index(args.expert))
        evaluator = GroupEvaluator(session.materialiser, session.engine, session.tasks, mode="off")
        seconds: dict[str, list[float]] = {"growing": [], "concatenating": []}
        records: dict[str, dict] = {}
        scores: dict[str, dict[str, float]] = {}
        for repeat in range(args.repeats):
            for path in ("concatenating", "growing"):
                session.engine.grow_cache = path == "growing"
                started = time.perf_counter()
                result = evaluator.evaluate([genome])[0]
                seconds[path].append(round(time.perf_counter() - started, 2))
                records.setdefault(path, {t: r.records for t, r in result.items()})
                scores[path] = {t: round(r.quality, 4) for t, r in result.items()}
                say(f"repeat {repeat} {path}: {scores[path]} in {seconds[path][-1]} s")
        best = {path: min(s) for path, s in seconds.items()}
        print(
            json.dumps(
                {
                    "benchmark": "kv_cache",
                    "expert": args.expert,
                    "dtype": str(session.engine.dtype).removeprefix("torch."),
                    "n_val": preset.n_val,
                    "seconds": seconds,
                    "best_seconds": best,
                    "speedup": round(best["concatenating"] / best["growing"], 3),
                    "scores": scores,
                    "transcripts_differing": compare(records["concatenating"], records["growing"]),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
