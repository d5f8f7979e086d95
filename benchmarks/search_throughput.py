"""Children evaluated per hour: one child at a time against K children sharing forward passes.

The demo's real validation tasks (``code-mini``, ``os-mini``, ``db-mini`` at the chosen preset's
sizes, in the real sandbox, throwaway machines and MariaDB), SmolLM2-135M-Instruct and the LoRA
experts ``make demo`` trains (trained here, cached, when missing). The children are bred as the
search breeds them (crossover of two experts or earlier children, SVD mutation along the active
task's expert), from a fixed seed, so every path scores the same children.

Paths: ``one_at_a_time`` materialises each child into the model and runs the tasks (the loop with
``children_per_batch: 1``); ``K=k`` evaluates groups of k children in shared passes
(``children_per_batch: k``, ``population: on``). Per-child validation scores of every path are
reported next to the one-at-a-time ones, with how many of them agree exactly. In bfloat16 a
shared pass rounds differently from a materialised one (the base matmul and the low-rank delta are
rounded separately), so a greedy decode can flip on a near tie; ``--dtype float32`` shows the
paths agreeing to float32 rounding.

Prints one JSON line: ``children_per_hour`` per path and ``speedup_best`` (target on the 2-core
CPU: >= 3).

Usage::

    python benchmarks/search_throughput.py [--preset cpu] [--children 16] [--serial-children 8]
        [--ks 4 8 16] [--dtype auto] [--n-val N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path


def breed(basis, n: int, seed: int, task_experts: list[int]) -> list:
    """``n`` children as the search would breed them, deterministically."""
    import torch

    from cycleqd.merging.crossover import crossover
    from cycleqd.merging.genome import expert_genome
    from cycleqd.merging.mutation import svd_mutation

    pool = [expert_genome(basis, e) for e in range(len(basis.experts))]
    out = []
    rng = torch.Generator().manual_seed(seed)
    for g in range(n):
        i, j = torch.randperm(len(pool), generator=rng)[:2].tolist()
        child, _ = crossover(pool[i], pool[j], rng, kind="per_expert", basis=basis)
        child = svd_mutation(child, basis, task_experts[g % len(task_experts)], rng)
        out.append(child)
        pool.append(child)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--children", type=int, default=16)
    parser.add_argument("--serial-children", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--n-val", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from demo_inputs import say, validation_config

    from cycleqd.search.executors.serial import GroupEvaluator
    from cycleqd.search.session import Session

    with tempfile.TemporaryDirectory(prefix="cqd-throughput-") as tmp:
        config, preset = validation_config(
            Path(tmp), preset=args.preset, n_val=args.n_val, dtype=args.dtype, seed=args.seed
        )
        base = config.base_model
        session = Session(config)
        engine = session.engine
        children = breed(session.basis, args.children, args.seed, session.task_experts)
        say(f"{len(children)} children, engine {engine.device} {engine.dtype}")

        def scores_of(results) -> list[dict[str, float]]:
            return [{t: round(r.quality, 4) for t, r in res.items()} for res in results]

        paths: dict[str, dict] = {}
        serial = GroupEvaluator(session.materialiser, engine, session.tasks, mode="off")
        n_serial = min(args.serial_children, len(children))
        started = time.perf_counter()
        one = [serial.evaluate([c])[0] for c in children[:n_serial]]
        seconds = time.perf_counter() - started
        reference = scores_of(one)
        paths["one_at_a_time"] = {
            "children": n_serial,
            "seconds": round(seconds, 1),
            "children_per_hour": round(n_serial / seconds * 3600, 1),
            "scores": reference,
        }
        # each path's figures as soon as it is done, so a run stopped early keeps them
        say(json.dumps({"path": "one_at_a_time", **paths["one_at_a_time"]}))
        for k in args.ks:
            group = GroupEvaluator(session.materialiser, engine, session.tasks, mode="on")
            results = []
            started = time.perf_counter()
            for at in range(0, len(children), k):
                results += group.evaluate(children[at : at + k])
            seconds = time.perf_counter() - started
            scores = scores_of(results)
            same = sum(a == b for a, b in zip(scores[:n_serial], reference, strict=True))
            diffs = [abs(a[t] - b[t]) for a, b in zip(scores, reference, strict=False) for t in a]
            paths[f"K={k}"] = {
                "children": len(children),
                "seconds": round(seconds, 1),
                "children_per_hour": round(len(children) / seconds * 3600, 1),
                "scores": scores,
                "agree_with_one_at_a_time": f"{same}/{n_serial}",
                "max_abs_score_diff": round(max(diffs), 4),
            }
            say(json.dumps({"path": f"K={k}", **paths[f"K={k}"]}))
    base_rate = paths["one_at_a_time"]["children_per_hour"]
    speedups = {p: round(v["children_per_hour"] / base_rate, 2) for p, v in paths.items()}
    print(
        json.dumps(
            {
                "benchmark": "search_throughput",
                "preset": preset.name,
                "n_val": preset.n_val,
                "model": str(base),
                "device": str(engine.device),
                "dtype": str(engine.dtype),
                "batch_size": engine.batch_size,
                "children_per_hour": {p: v["children_per_hour"] for p, v in paths.items()},
                "speedup": speedups,
                "speedup_best": max(v for p, v in speedups.items() if p != "one_at_a_time"),
                "target_speedup": 3,
                "paths": paths,
            }
        )
    )


if __name__ == "__main__":
    main()
