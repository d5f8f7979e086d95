"""Children per minute on 1, 2, 4 and 8 Ray actors, with an evaluation of fixed simulated cost.

The driver breeds every child from the current archives, the actors evaluate. With a fixed
evaluation cost ``C`` an ideal pool of ``N`` actors finishes ``60 N / C`` children per minute; the
parallel efficiency at ``N`` is the measured rate over ``N`` times the one-actor rate. What eats
into it is the driver's per-child work (sampling, crossover, mutation, saving the genome,
committing the run directory) and Ray's call overhead, so this measures the loop, not the model.

Models are tiny random Llamas built locally; the tasks are ``synthetic`` (a genuine function of the
merged weights plus a fixed sleep). One local Ray serves all actor counts; actor start-up and the
seeding of the archives are not timed, only the search phase: from the first bred child to the
last inserted one. Prints one JSON line.

Usage::

    python benchmarks/scaling.py [--cost 2.0] [--per-actor 4] [--actors 1 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_family(root: Path, n_experts: int) -> dict:
    from cycleqd.testing.tiny import build_char_tokenizer, build_random_model

    tok = build_char_tokenizer()
    base = build_random_model("llama", tok, seed=0, hidden=32, intermediate=64, layers=2)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    experts = {}
    for i in range(n_experts):
        g = torch.Generator().manual_seed(i + 1)
        model = build_random_model("llama", tok, seed=0, hidden=32, intermediate=64, layers=2)
        state = {
            k: v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=g)
            for k, v in base.state_dict().items()
        }
        model.load_state_dict(state)
        model.save_pretrained(root / f"e{i}")
        tok.save_pretrained(root / f"e{i}")
        experts[f"e{i}"] = root / f"e{i}"
    return {"base": root / "base", "experts": experts}


def measure(family: dict, root: Path, actors: int, children: int, cost: float) -> dict:
    from cycleqd.config import load_config
    from cycleqd.search.run import start_run

    names = list(family["experts"])
    data = {
        "seed": 0,
        "base_model": str(family["base"]),
        "experts": [{"name": n, "path": str(p)} for n, p in family["experts"].items()],
        "tasks": [
            {
                "name": n,
                "type": "synthetic",
                "params": {"cost_s": cost / len(names), "seed": i},
                "bc": {"bins": 10},
            }
            for i, n in enumerate(names)
        ],
        "search": {"generations": children, "plot_every": 0},
        "basis": {"cache_dir": str(root / "cache")},
        "executor": {"kind": "ray", "actors": actors, "actor_cpus": 0.01},
    }
    stamps: list[float] = []
    first: list[float] = []

    def progress(event: dict) -> None:
        if event.get("phase") == "seeding" and event.get("index") == len(names) - 1:
            first.append(time.perf_counter())  # the last expert scored: breeding starts now
        elif event.get("phase") == "search":
            stamps.append(time.perf_counter())

    summary = start_run(
        load_config(data=data), root / f"run-{actors}", force=True, progress=progress
    )
    assert summary["generations_done"] == children
    elapsed = stamps[-1] - first[0]
    return {
        "children": children,
        "seconds": round(elapsed, 3),
        "children_per_minute": round(60 * children / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost", type=float, default=2.0, help="seconds per child (all tasks)")
    parser.add_argument("--per-actor", type=int, default=4, help="children per actor measured")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="cqd-scal-") as tmp:
        root = Path(tmp)
        family = build_family(root / "models", n_experts=3)
        ray.init(
            _temp_dir=str(root / "ray"),
            include_dashboard=False,
            logging_level="warning",
            num_cpus=max(args.actors),
        )
        results = {}
        for n in args.actors:
            print(f"{n} actor(s)...", file=sys.stderr, flush=True)
            results[n] = measure(family, root, n, args.per_actor * n, args.cost)
            print(f"  {results[n]}", file=sys.stderr, flush=True)
        ray.shutdown()
    rate = {str(n): r["children_per_minute"] for n, r in results.items()}
    one = results[min(results)]["children_per_minute"] / min(results)
    efficiency = {
        str(n): round(r["children_per_minute"] / (n * one), 3) for n, r in results.items()
    }
    print(
        json.dumps(
            {
                "children_per_minute": rate,
                "efficiency": efficiency,
                "efficiency_at_8": efficiency.get("8"),
                "ideal_children_per_minute_per_actor": round(60 / args.cost, 2),
                "cost_s": args.cost,
                "details": {str(n): r for n, r in results.items()},
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "ray": ray.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
