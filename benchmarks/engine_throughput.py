"""transformers or vLLM: children per hour on the demo's validation tasks, same children and tasks.

Each engine holds SmolLM2-135M-Instruct; two children of the demo's LoRA experts (the code
expert, and the sum of all three task vectors) are written into it as the search writes every
child (the materialiser: ``HFEngine`` parameters in place; ``VLLMEngine`` through vLLM's in-place
reload, prefix cache reset) and scored on the ``code-mini``, ``os-mini`` and ``db-mini``
validation splits (real sandboxes, a real MariaDB) at the ``cpu`` preset's budgets. The experts
come from the demo's cache, trained as the demo trains them when missing (about 45 minutes on 2
cores; ``benchmarks/demo_inputs.py``).

Prints one JSON line: per engine its start-up seconds (bases and engine), seconds per child,
``children_per_hour`` and per-task scores; ``speedup`` (vLLM's children per hour over
transformers'), and how many per-sample transcripts are identical between the engines. Greedy
decoding makes an engine's answers a function of the weights and the tokens; in float32 both
should agree up to kernel rounding, in bfloat16 they drift by the noise this reports.

Usage::

    python benchmarks/engine_throughput.py [--n 32] [--dtype auto] [--engines hf vllm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="validation samples per task")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from demo_inputs import say, validation_config

    from cycleqd.merging.genome import combine, expert_genome
    from cycleqd.search.executors.serial import evaluate_genome
    from cycleqd.search.session import Session

    out: dict[str, Any] = {"benchmark": "engine_throughput", "n": args.n}
    records: dict[str, list[dict[str, list]]] = {}
    with tempfile.TemporaryDirectory(prefix="cqd-engines-") as tmp:
        config, _ = validation_config(Path(tmp), n_val=args.n, dtype=args.dtype, seed=args.seed)
        out["model"] = str(config.base_model)
        for kind in args.engines:
            engine_cfg = config.engine.model_copy(update={"kind": kind})
            run = config.model_copy(update={"engine": engine_cfg})
            started = time.perf_counter()
            session = Session(run)
            start_s = time.perf_counter() - started
            basis = session.basis
            experts = [expert_genome(basis, e) for e in range(len(basis.experts))]
            children = {"code expert": experts[0], "experts' sum": combine(experts, [1.0] * 3)}
            seconds, scores = [], {}
            records[kind] = []
            for name, genome in children.items():
                started = time.perf_counter()
                results = evaluate_genome(
                    session.materialiser, session.engine, session.tasks, genome
                )
                seconds.append(time.perf_counter() - started)
                scores[name] = {k: round(r.quality, 4) for k, r in results.items()}
                records[kind].append({k: r.records for k, r in results.items()})
                say(f"{kind}: {name}: {seconds[-1]:.1f}s {scores[name]}")
            out[kind] = {
                "device": str(session.engine.device),
                "dtype": str(session.engine.dtype).removeprefix("torch."),
                "start_s": round(start_s, 1),
                "seconds_per_child": [round(s, 1) for s in seconds],
                "children_per_hour": round(3600 / statistics.mean(seconds), 1),
                "scores": scores,
            }
            del session
    if {"hf", "vllm"} <= set(out):
        out["speedup"] = round(out["vllm"]["children_per_hour"] / out["hf"]["children_per_hour"], 2)
        same = total = 0
        for a, b in zip(records["hf"], records["vllm"], strict=True):
            for task, rows in a.items():
                for x, y in zip(rows, b[task], strict=True):
                    total += 1
                    same += _transcript(x) == _transcript(y)
        out["identical_transcripts"] = f"{same}/{total}"
    print(json.dumps(out))


def _transcript(record: dict[str, Any]) -> str:
    """A record without its timings: what the model said and what the task made of it."""
    return json.dumps(
        {k: v for k, v in record.items() if "second" not in k and "time" not in k},
        sort_keys=True,
        default=str,
    )


if __name__ == "__main__":
    main()
