"""The demo's ablation without re-running its baselines: one search per operator variant.

``cycleqd demo --ablation`` adds this table to a whole demo run; this script runs only the
variants (the paper's operators, then each of the preset's changes alone, see
``cycleqd.demo.presets.ablations``) on the demo's cached experts and data, and scores each final
model on the demo's test splits, printing one JSON line per variant as it finishes (validation
average of the final model, test scores with 95% intervals), so an interrupted run keeps what it
measured. ``--only`` picks variants by their position in that list.

Usage::

    python benchmarks/ablation.py [--preset cpu] [--out runs/ablation] [--only 0 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--only", type=int, nargs="*", default=None)
    args = parser.parse_args()

    from demo_inputs import say

    from cycleqd.demo.pipeline import Demo, DemoSettings, _slug
    from cycleqd.demo.presets import PRESETS, ablations
    from cycleqd.demo.skills import SKILLS
    from cycleqd.demo.tables import ablation_row

    preset = PRESETS[args.preset]
    demo = Demo(DemoSettings(out=args.out, preset=preset), say=say)
    base = demo.model()
    data = demo.data()
    experts = demo.experts(base, data)
    test_files = {skill: data[skill]["test"] for skill in SKILLS}
    variants = ablations(preset)
    for i, (label, variant) in enumerate(variants):
        if args.only is not None and i not in args.only:
            continue
        say(f"ablation {i}: {label}")
        run_dir, summary = demo.search(
            base, experts, data, overrides=variant, run_name=f"ablation-{_slug(label)}"
        )
        report = demo.evaluate(_slug(label), Path(summary["final"]["model"]), test_files, "test")
        row = ablation_row(label, report, summary, seed=preset.seed)
        row.pop("samples")
        print(
            json.dumps(
                {
                    "benchmark": "ablation",
                    "preset": preset.name,
                    "variant": i,
                    **row,
                    "final": summary["final"]["chosen"],
                    "run": str(run_dir),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
