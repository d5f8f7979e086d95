"""Peak memory of expert training by conversation length: what the demo's `experts` stage holds.

Trains SmolLM2-135M-Instruct (``--model``; fetch it with ``cycleqd models fetch
smollm2-135m-instruct``) with the demo's settings (LoRA r=16 on every linear module, batch 8,
bf16 autocast where the CPU has it, anchored with 4 anchor conversations per step) on synthetic
conversations of ``--lengths`` tokens, each length in a fresh process, and prints one JSON line
per length: ``tokens``, ``peak_rss_bytes`` of the training process (its high-water mark reset
after the model is loaded, so the model's own size is in it), ``seconds_per_step``; a length
whose process was killed (the out-of-memory killer) gives ``killed_by_signal``.

Usage::

    python benchmarks/train_memory.py [--model DIR] [--lengths 256 512 1024 2048] [--steps 2]
        [--max-batch-tokens N] [--lora-dropout P]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODEL = Path.home() / ".cache" / "cycleqd" / "models" / "smollm2-135m-instruct"


def child(
    model_dir: Path, length: int, steps: int, max_batch_tokens: int | None, dropout: float
) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from cycleqd.models.checkpoints import checkpoint_dtype
    from cycleqd.models.devices import bf16_is_fast
    from cycleqd.resources import peak_rss_bytes, reset_peak
    from cycleqd.train.loop import LoopSettings, train_loop
    from cycleqd.train.lora import add_lora, cast_frozen_weights
    from cycleqd.train.masking import IGNORE, Encoded

    torch.manual_seed(0)
    model = add_lora(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        r=16,
        alpha=32,
        dropout=dropout,
    )
    autocast = torch.bfloat16 if bf16_is_fast(torch.device("cpu")) else None
    if autocast is not None and checkpoint_dtype(model_dir) == torch.bfloat16:
        cast_frozen_weights(model, torch.bfloat16)  # as train_expert does
    vocab = model.config.vocab_size
    loaded = peak_rss_bytes()

    def conversation(i: int) -> Encoded:
        ids = torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(i))
        labels = [IGNORE] * (length // 2) + ids[length // 2 :].tolist()  # replies: second half
        return Encoded(f"s{i}", "synthetic", ids.tolist(), labels)

    samples = [conversation(i) for i in range(8 * steps)]
    anchors = [conversation(10_000 + i) for i in range(4 * steps)]
    settings = LoopSettings(
        epochs=1,
        lr=1e-3,
        batch_size=8,
        seed=0,
        anchor_weight=1.0,
        anchor_batch=4,
        max_batch_tokens=max_batch_tokens,
        autocast=autocast,
    )
    reset_peak()
    started = time.perf_counter()
    train_loop(
        model.get_base_model(),
        samples,
        settings,
        pad_id=0,
        device=torch.device("cpu"),
        anchors=anchors,
        reference=model.disable_adapter,
    )
    seconds = (time.perf_counter() - started) / steps
    return {
        "benchmark": "train_memory",
        "tokens": length,
        "batch": 8,
        "anchor_batch": 4,
        "max_batch_tokens": max_batch_tokens,
        "lora_dropout": dropout,
        "loaded_rss_bytes": loaded,
        "peak_rss_bytes": peak_rss_bytes(),
        "seconds_per_step": round(seconds, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument(
        "--max-batch-tokens", type=int, help="train's max_batch_tokens (micro-batches)"
    )
    parser.add_argument(
        "--lora-dropout", type=float, default=None, help="default: train-expert's default"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from cycleqd.train.config import TrainConfig

        dropout = TrainConfig().lora_dropout if args.lora_dropout is None else args.lora_dropout
        result = child(args.model, args.child, args.steps, args.max_batch_tokens, dropout)
        print(json.dumps(result), flush=True)
        return
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model}: no model; run: cycleqd models fetch smollm2-135m-instruct")
    for length in args.lengths:
        cmd = [sys.executable, __file__, "--model", str(args.model), "--steps", str(args.steps)]
        if args.max_batch_tokens:
            cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
        if args.lora_dropout is not None:
            cmd += ["--lora-dropout", str(args.lora_dropout)]
        done = subprocess.run([*cmd, "--child", str(length)], capture_output=True, text=True)
        if done.returncode < 0:  # killed: on this machine, by the kernel's out-of-memory killer
            failed = {
                "benchmark": "train_memory",
                "tokens": length,
                "killed_by_signal": -done.returncode,
            }
            print(json.dumps(failed), flush=True)
            continue
        if done.returncode != 0:
            raise SystemExit(f"length {length}: {done.stderr[-2000:]}")
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
