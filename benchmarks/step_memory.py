"""Resident memory through an expert's training steps, on the demo's own conversations.

Builds the `cpu` preset's os conversations (gold trajectories replayed in the real sandbox, as
the demo does) and the db ones as anchors, loads SmolLM2-135M-Instruct with the demo's LoRA
and bf16 frozen weights, and trains ``--steps`` anchored steps of batch 8. Prints one JSON line:
resident GB after the imports, the data and the model, after every step, the training's peak,
and seconds per step. ``--no-trim`` skips the heap hand-back the loop does after each step on
glibc's malloc (``trim_heap``), to show what it keeps; ``--max-batch-tokens`` is the preset's
``train_max_batch_tokens``. It runs on TCMalloc as the demo does, where the machine has it
(``CYCLEQD_ALLOCATOR=system``: glibc's malloc).

Usage::

    python benchmarks/step_memory.py [--model DIR] [--steps 10] [--max-batch-tokens 1024]
        [--anchor-batch 2] [--no-trim]

Run it with nothing else on the machine (docs/results.md: two torch processes on two cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from train_step import DEFAULT_MODEL, encoded


def main() -> None:
    from cycleqd.allocator import restart_with_preferred

    restart_with_preferred()  # the allocator the demo runs on (CYCLEQD_ALLOCATOR=system: glibc's)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-batch-tokens", type=int, default=1024)
    parser.add_argument("--anchor-batch", type=int, default=2)
    parser.add_argument("--no-trim", action="store_true", help="keep freed heap between steps")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    import cycleqd.train.loop as loop
    from cycleqd.allocator import in_use
    from cycleqd.models.devices import bf16_is_fast
    from cycleqd.resources import peak_rss_bytes, release_memory, reset_peak, rss_bytes
    from cycleqd.train.lora import add_lora, cast_frozen_weights

    def gb(n: int) -> float:
        return round(n / 1e9, 2)

    record: dict = {"steps": args.steps, "max_batch_tokens": args.max_batch_tokens}
    record["trim_each_step"] = not args.no_trim
    record["allocator"] = in_use()
    record["after_imports_gb"] = gb(rss_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        rows = encoded(args.model, "os", Path(tmp), 8 * args.steps)
        anchors = encoded(args.model, "db", Path(tmp), 4 * args.steps)
    release_memory()
    record["after_data_gb"] = gb(rss_bytes())
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = add_lora(base, r=16, alpha=32, dropout=0.0)
    fast = bf16_is_fast(torch.device("cpu"))
    if fast:
        cast_frozen_weights(model, torch.bfloat16)
    release_memory()
    record["after_model_gb"] = gb(rss_bytes())
    if args.no_trim:
        loop.trim_heap = lambda: None  # the loop as it was: no hand-back between steps
    settings = loop.LoopSettings(
        epochs=1,
        lr=1e-3,
        batch_size=8,
        seed=0,
        anchor_weight=1.0,
        anchor_batch=args.anchor_batch,
        max_batch_tokens=args.max_batch_tokens,
        autocast=torch.bfloat16 if fast else None,
    )
    after: list[float] = []
    reset_peak()
    started = time.perf_counter()
    loop.train_loop(
        model.get_base_model(),
        rows,
        settings,
        pad_id=0,
        device=torch.device("cpu"),
        on_step=lambda *_: after.append(gb(rss_bytes())),
        anchors=anchors,
        reference=model.disable_adapter,
    )
    record["seconds_per_step"] = round((time.perf_counter() - started) / len(after), 2)
    record["after_each_step_gb"] = after
    record["peak_gb"] = gb(peak_rss_bytes())
    print(json.dumps(record))


if __name__ == "__main__":
    main()
