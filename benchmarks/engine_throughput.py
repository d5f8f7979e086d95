"""transformers or vLLM: children per hour on the demo's validation tasks, same children and tasks.

Each engine holds the base; every child's weights are then written into it as a search does
(``HFEngine``: copied into its parameters; ``VLLMEngine``: vLLM's in-place reload, prefix cache
reset) and the child is scored on ``code-mini``, ``os-mini`` and ``db-mini`` validation samples
(real sandboxes, a real MariaDB), at the ``cpu`` demo preset's token budgets and rounds. The
children are the model directories given with ``--children`` (e.g. the demo's experts, in
``runs/demo/models``); without them the base stands in for two children (what is then measured is
the engines and the swap, not a search's children).

Prints one JSON line: per engine its start-up seconds, seconds per child and ``children_per_hour``,
per child its per-task scores; ``speedup`` (vLLM's children per hour over transformers'), and how
many of the per-sample transcripts are identical between the engines. Greedy decoding makes both
engines' answers a function of the weights and the tokens; in float32 they should agree (kernel
rounding aside), in bfloat16 they drift by the noise this reports.

Usage::

    python benchmarks/engine_throughput.py [--model DIR] [--children DIR ...] [--n 32]
        [--dtype auto] [--engines hf vllm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The cpu preset's budgets (configs/demo/cpu.yaml): tokens per reply and rounds per episode.
MAX_NEW_TOKENS = {"code": 96, "os": 64, "db": 64}
MAX_ROUNDS = {"os": 3, "db": 3}


def child_weights(path: Path) -> dict[str, Any]:
    """A child's full weights by checkpoint name (a peft adapter is merged into its base)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from cycleqd.models.checkpoints import adapter_base, checkpoint_dtype

    base = adapter_base(path)
    if base is None:
        weights: dict[str, Any] = {}
        for f in sorted(path.glob("*.safetensors")):
            weights |= load_file(str(f))
        return weights
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=checkpoint_dtype(base))
    merged = PeftModel.from_pretrained(model, path).merge_and_unload()
    return {k: v.to(torch.float32) for k, v in merged.state_dict().items()}


def swap(engine: Any, weights: dict[str, Any]) -> None:
    """Write a child's weights into the engine, the way the search's materialiser does."""
    import torch

    if hasattr(engine, "write_weights"):
        engine.write_weights(weights.items())
        return
    from cycleqd.merging.materialise import resolve_tensor

    with torch.no_grad():
        for name, tensor in weights.items():
            target = resolve_tensor(engine.module, name)
            target.data.copy_(tensor.view_as(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="the base (default SmolLM2-135M)")
    parser.add_argument("--children", type=Path, nargs="*", default=[])
    parser.add_argument("--n", type=int, default=32, help="validation samples per task")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cycleqd.demo.skills import SKILLS
    from cycleqd.models.engines import open_engine
    from cycleqd.models.zoo import resolve_model
    from cycleqd.tasks import build_task
    from cycleqd.tasks.suites import get_suite, write_samples

    model = args.model or resolve_model("smollm2-135m-instruct", fetch_missing=True)
    children = args.children or [model, model]
    weights = [child_weights(c) for c in children]
    out: dict[str, Any] = {"benchmark": "engine_throughput", "model": str(model), "n": args.n}
    records: dict[str, list[dict[str, list]]] = {}
    with tempfile.TemporaryDirectory(prefix="cqd-engines-") as tmp:
        tasks = []
        for skill, (suite, type_name, suffix) in SKILLS.items():
            data = Path(tmp) / f"{suite}-validation{suffix}"
            write_samples(data, get_suite(suite).generate("validation", args.n, args.seed, None))
            params: dict[str, Any] = {"data": str(data), "max_new_tokens": MAX_NEW_TOKENS[skill]}
            params |= {"format": "mbpp"} if skill == "code" else {"max_rounds": MAX_ROUNDS[skill]}
            tasks.append(build_task(skill, type_name, params, f"tasks.{skill}"))
        for kind in args.engines:
            started = time.perf_counter()
            engine = open_engine(model, kind=kind, dtype=args.dtype, batch_size=48)
            start_s = time.perf_counter() - started
            seconds, scores = [], []
            records[kind] = []
            for i, w in enumerate(weights):
                started = time.perf_counter()
                swap(engine, w)
                results = {t.name: t.evaluate(engine) for t in tasks}
                seconds.append(time.perf_counter() - started)
                scores.append({k: round(r.quality, 4) for k, r in results.items()})
                records[kind].append({k: r.records for k, r in results.items()})
                print(f"{kind}: child {i + 1}: {seconds[-1]:.1f}s {scores[-1]}", file=sys.stderr)
            out[kind] = {
                "device": str(engine.device),
                "dtype": str(engine.dtype).removeprefix("torch."),
                "start_s": round(start_s, 1),
                "seconds_per_child": [round(s, 1) for s in seconds],
                "children_per_hour": round(3600 / statistics.mean(seconds), 1),
                "scores": scores,
            }
            del engine
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
