"""Where an expert's training step spends its time, on the demo's own conversations.

Builds the `cpu` preset's training data (the procedural suites' gold trajectories, replayed and
verified in the real environments, as the demo does), then for each ``--skills`` entry times
``--steps`` optimizer steps of the demo's recipe (LoRA r=16 on every linear module, no dropout,
batch 8, bf16 autocast where the CPU has it, micro-batches of ``--max-batch-tokens``) twice:
plain (the all-data fine-tune's kind of step) and anchored (4 of the other skills'
conversations, KL to the base). A model load and two more anchored steps run under
``torch.profiler`` for the operators that cost most. Prints one JSON object: per skill, seconds
per step each way, the tokens each pass computes, and the top operators.

Usage::

    python benchmarks/train_step.py [--model DIR] [--skills code os db] [--steps 3]
        [--max-batch-tokens 1536] [--top 12]

Run it with nothing else on the CPU: two torch processes on two cores slow each other 15x.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

DEFAULT_MODEL = Path.home() / ".cache" / "cycleqd" / "models" / "smollm2-135m-instruct"


def encoded(model_dir: Path, skill: str, out: Path, n: int) -> list:
    """The demo's training conversations of ``skill``, verified and tokenised."""
    from transformers import AutoTokenizer

    from cycleqd.demo.skills import SKILLS
    from cycleqd.tasks.suites import get_suite, write_samples
    from cycleqd.train.data import BuildOptions
    from cycleqd.train.expert import encode_source
    from cycleqd.train.spec import resolve_spec

    suite, _, suffix = SKILLS[skill]
    path = out / f"{suite}-train{suffix}"
    write_samples(path, get_suite(suite).generate("train", n, 0, None))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    options = BuildOptions(n=None, seed=0)
    _, rows = encode_source(resolve_spec(str(path)), tokenizer, options, max_len=2048)
    return rows


def steps_seconds(
    model_dir: Path,
    samples,
    anchors,
    steps: int,
    max_tokens: int | None,
    dropout: float = 0.0,
    attention: str = "sdpa",
) -> float:
    """Seconds per optimizer step of ``steps`` steps (after one warm-up step)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cycleqd.models.devices import bf16_is_fast
    from cycleqd.train.loop import LoopSettings, train_loop
    from cycleqd.train.lora import add_lora, cast_frozen_weights

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=attention
    )
    model = add_lora(base, r=16, alpha=32, dropout=dropout)
    fast = bf16_is_fast(torch.device("cpu"))
    if fast:
        cast_frozen_weights(model, torch.bfloat16)
    stamps: list[float] = []
    settings = LoopSettings(
        epochs=1,
        lr=1e-3,
        batch_size=8,
        seed=0,
        anchor_weight=1.0 if anchors else 0.0,
        anchor_batch=4,
        max_batch_tokens=max_tokens,
        autocast=torch.bfloat16 if fast else None,
    )
    train_loop(
        model.get_base_model(),
        samples[: 8 * (steps + 1)],
        settings,
        pad_id=0,
        device=torch.device("cpu"),
        on_step=lambda *_: stamps.append(time.perf_counter()),
        anchors=anchors,
        reference=model.disable_adapter if anchors else None,
    )
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def profile_step(
    model_dir: Path, samples, anchors, max_tokens: int | None, top: int, **kwargs
) -> list:
    """The ``top`` operators by self CPU time of a profiled run: loading the model with its
    adapters, then two anchored steps (the first a warm-up), so the shares include the load."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps_seconds(model_dir, samples[:16], anchors, 1, max_tokens, **kwargs)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [
        {
            "op": e.key,
            "self_s": round(e.self_cpu_time_total / 1e6, 3),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in rows[:top]
    ]


def mean_computed(rows, batch_size: int) -> int:
    """Tokens a forward pass computes per planned batch (shared prefix once), on average."""
    from cycleqd.train.batching import plan_batches, shared_prefix
    from cycleqd.train.loop import computed_tokens

    plan = plan_batches(rows, batch_size, 0, 0)
    batches = [[rows[i] for i in b] for b in plan]
    return round(sum(computed_tokens(b, shared_prefix(b)) for b in batches) / len(plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--skills", nargs="+", default=["code", "os", "db"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=64, help="conversations built per skill")
    parser.add_argument("--max-batch-tokens", type=int, default=1536)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="the demo's: 0")
    parser.add_argument(
        "--import-vllm",
        action="store_true",
        help="import vLLM first, as the demo does when its engine is vllm",
    )
    parser.add_argument("--attention", default="sdpa", help="attn_implementation: sdpa, eager")
    args = parser.parse_args()
    if args.import_vllm:
        from cycleqd.models.vllm_engine import vllm_available

        vllm_available()

    result: dict = {
        "steps": args.steps,
        "max_batch_tokens": args.max_batch_tokens,
        "lora_dropout": args.lora_dropout,
        "attention": args.attention,
        "vllm_imported": args.import_vllm,
        "skills": {},
    }
    how = {"dropout": args.lora_dropout, "attention": args.attention}
    with tempfile.TemporaryDirectory() as tmp:
        data = {s: encoded(args.model, s, Path(tmp), args.n) for s in ("code", "os", "db")}
    for skill in args.skills:
        samples = data[skill]
        anchors = [r for other, rows in data.items() if other != skill for r in rows]
        plain = steps_seconds(args.model, samples, [], args.steps, args.max_batch_tokens, **how)
        anchored = steps_seconds(
            args.model, samples, anchors, args.steps, args.max_batch_tokens, **how
        )
        entry = {
            "conversation_tokens_mean": round(
                sum(len(r.input_ids) for r in samples) / len(samples)
            ),
            "batch_tokens_computed_mean": mean_computed(samples, 8),
            "anchor_tokens_computed_mean": mean_computed(anchors, 4),
            "plain_s_per_step": round(plain, 2),
            "anchored_s_per_step": round(anchored, 2),
        }
        if not args.no_profile:
            entry["top_ops_anchored"] = profile_step(
                args.model, samples, anchors, args.max_batch_tokens, args.top, **how
            )
        result["skills"][skill] = entry
        print(json.dumps({skill: entry}), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
