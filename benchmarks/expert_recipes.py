"""A training recipe for the demo's experts, judged by what the table needs: their own skill.

Trains the `cpu` preset's three anchored LoRA experts with the recipe given here (epochs, peak
learning rate, batch, anchor batch) through the demo's own stages, then scores each expert on its
own validation split (the preset's 32 samples, the preset's engine, one engine for the three),
and prints one JSON line: the recipe, each expert's validation score, the experts stage's seconds
and peak resident memory. An expert under 0.8 on its own skill makes a merge table mean little
(docs/results.md), so a cheaper recipe is only a saving if every score stays at 0.8 or more.

Usage::

    python benchmarks/expert_recipes.py --out /tmp/recipe-e1 [--epochs 1] [--lr 2e-3]
        [--batch 8] [--anchor-batch 4] [--n-train 192] [--skills code os db]

Run it with nothing else on the machine: two torch processes on two cores slow each other many
times over (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from cycleqd.allocator import library, wanted
from cycleqd.demo.pipeline import Demo, DemoSettings, check_preset
from cycleqd.models.engines import EngineSlot


def main() -> None:
    from cycleqd.allocator import restart_with_preferred

    restart_with_preferred()  # the allocator the demo runs on (CYCLEQD_ALLOCATOR=system: glibc's)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="data, experts and evaluations")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--anchor-batch", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None, help="conversations per skill")
    parser.add_argument("--skills", nargs="+", default=None, help="default: all three")
    args = parser.parse_args()
    preset = check_preset(args.preset)
    changes = {
        "train_epochs": args.epochs,
        "train_lr": args.lr,
        "train_batch_size": args.batch,
        "train_anchor_batch": args.anchor_batch,
        "n_train": args.n_train,
    }
    preset = replace(preset, **{k: v for k, v in changes.items() if v is not None})
    settings = DemoSettings(
        out=args.out / "demo", preset=preset, experts_cache=args.out / "experts", language=False
    )
    demo = Demo(settings, say=lambda message: print(message, flush=True))
    with demo.stage("model"):
        base = demo.model()
    with demo.stage("data"):
        data = demo.data()
    with demo.stage("experts"):
        experts = demo.experts(base, data, args.skills)
    validation: dict[str, float] = {}
    with demo.stage("validation"), EngineSlot() as slot:
        for skill, path in experts.items():
            report = demo.evaluate(
                skill, path, {skill: data[skill]["validation"]}, "validation", slot=slot
            )
            validation[skill] = report["tasks"][skill]["quality"]
    record = {
        "allocator of the training children": "tcmalloc" if wanted() and library() else "system",
        "preset": preset.name,
        "epochs": preset.train_epochs,
        "lr": preset.train_lr,
        "batch": preset.train_batch_size,
        "anchor_batch": preset.train_anchor_batch,
        "n_train": preset.n_train,
        "validation": validation,
        "all_at_least_0.8": all(q >= 0.8 for q in validation.values()),
        "experts_seconds": demo.timings["experts"],
        "experts_peak_gb": demo.peaks_gb["experts"],
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
