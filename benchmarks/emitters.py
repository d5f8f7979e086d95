"""The paper's operators against CMA-ME emitters, at the same number of child evaluations.

On the demo's experts and validation splits (``--preset``; experts in the cache are used as
they are, missing ones trained as ``cycleqd demo`` does), one search per method and seed with
``--evaluations`` children each. ``paper``: the paper's operators (the demo ablation's first
variant); ``preset``: the preset's own operators; ``cma_me``: the preset's run with
``search.emitter: cma_me`` (``--groups``, ``--batch-size``, ``--sigma0``). Prints one JSON line
per method and seed as it finishes (an interrupted benchmark keeps what it measured):
``qd_score`` and ``coverage`` per archive, ``best_validation_average`` (the best child's mean
over the three tasks), ``experts_sum_average`` (the experts' sum, i.e. every scale 1, scored
once on the same splits), ``evaluations_to_experts_sum`` (the first child at least that good,
or null) and ``entered_no_archive`` (children no archive took: the most that screening children
on a cheap estimate could skip). Selection never sees test data; no test split is scored here.

Usage::

    python benchmarks/emitters.py [--preset cpu] [--evaluations 40] [--seeds 0 1 2]
        [--groups block] [--batch-size 4] [--sigma0 0.2] [--out runs/emitters]
        [--experts-cache DIR] [--model DIR] > emitters.jsonl
    python benchmarks/emitters.py --summarise emitters.jsonl

``--summarise`` prints one line per method over its seeds (mean, min and max of each figure).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from statistics import mean


def experts_sum_average(
    demo, base: Path, experts: dict[str, Path], data, seed: int, say, slot
) -> float:
    """The experts' sum (task arithmetic at weight 1) on the validation splits, once."""
    from cycleqd.demo.baselines import build_merges
    from cycleqd.demo.skills import SKILLS

    merges = build_merges(
        demo.out / "baselines", base, experts, ["task_arithmetic_full"], [seed], say
    )
    model = merges["task_arithmetic_full"]
    files = {skill: data[skill]["validation"] for skill in SKILLS}
    report = demo.evaluate("experts-sum", model, files, "validation", slot=slot)
    return mean(r["quality"] for r in report["tasks"].values())


def measure(run_dir: Path, summary: dict, target: float) -> dict:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    averages = [mean(line["scores"][t] for t in summary["best_quality"]) for line in lines]
    reached = next((i + 1 for i, a in enumerate(averages) if a >= target - 1e-12), None)
    return {
        "evaluations": len(lines),
        "qd_score": {t: a["qd_score"] for t, a in summary["archives"].items()},
        "coverage": {t: a["coverage"] for t, a in summary["archives"].items()},
        "best_quality": summary["best_quality"],
        "best_validation_average": max(averages, default=None),
        "evaluations_to_experts_sum": reached,
        # children that entered no archive: all a screen on a cheap estimate could skip
        "entered_no_archive": sum(not any(line["inserted"].values()) for line in lines),
    }


def aggregate(lines: list[dict]) -> list[dict]:
    """Per method over its seeds: mean, smallest and largest of each per-seed figure, and in
    how many seeds a child reached the experts' sum (the spread is what decides "better")."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": mean(values), "min": min(values), "max": max(values)}

    out = []
    for method in dict.fromkeys(line["method"] for line in lines):
        runs = [line for line in lines if line["method"] == method]
        tasks = list(runs[0]["qd_score"])
        out.append(
            {
                "benchmark": "emitters-summary",
                "method": method,
                "seeds": [r["seed"] for r in runs],
                "evaluations": [r["evaluations"] for r in runs],
                "experts_sum_average": runs[0]["experts_sum_average"],
                "qd_score_total": spread([sum(r["qd_score"].values()) for r in runs]),
                "qd_score": {t: spread([r["qd_score"][t] for r in runs]) for t in tasks},
                "coverage": {t: spread([r["coverage"][t] for r in runs]) for t in tasks},
                "best_quality": {t: spread([r["best_quality"][t] for r in runs]) for t in tasks},
                "best_validation_average": spread([r["best_validation_average"] for r in runs]),
                "reached_experts_sum": sum(
                    r["evaluations_to_experts_sum"] is not None for r in runs
                ),
                "entered_no_archive": [r.get("entered_no_archive") for r in runs],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--groups", default="block", choices=["model", "block", "tensor_kind"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sigma0", type=float, default=0.2)
    parser.add_argument(
        "--methods", nargs="+", default=["paper", "cma_me"], choices=["paper", "preset", "cma_me"]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/emitters"))
    parser.add_argument(
        "--experts-cache",
        type=Path,
        default=None,
        help="the folder holding the demo's expert cache, one subfolder per preset "
        "(DIR/<preset>/expert-code...; default: the demo's); cached experts are used as they are",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="the base model directory (default: the demo's, SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--summarise",
        type=Path,
        default=None,
        metavar="JSONL",
        help="print the per-method summary over seeds of an earlier run's output and exit",
    )
    args = parser.parse_args()
    if args.summarise is not None:
        lines = [json.loads(x) for x in args.summarise.read_text().splitlines() if x.strip()]
        for line in aggregate([x for x in lines if x.get("benchmark") == "emitters"]):
            print(json.dumps(line))
        return

    from demo_inputs import say

    from cycleqd.demo.pipeline import Demo, DemoSettings
    from cycleqd.demo.presets import PAPER_OPERATORS, PRESETS
    from cycleqd.demo.skills import SKILLS
    from cycleqd.models.engines import EngineSlot

    preset = replace(PRESETS[args.preset], generations=args.evaluations)
    settings = DemoSettings(
        out=args.out,
        preset=preset,
        model=args.model,
        language=False,
        experts_cache=args.experts_cache,
    )
    demo = Demo(settings, say=say)
    base = demo.model()
    data = demo.data()
    cached = {skill: demo._expert_dir(f"expert-{skill}") for skill in SKILLS}
    if all((d / "config.json").is_file() for d in cached.values()):
        experts = cached  # as they are (their cache key also hashes code a benchmark can ignore)
        say(f"experts: as cached in {cached['code'].parent}")
    else:
        say(f"experts: none cached in {cached['code'].parent}; training them as the demo does")
        experts = demo.experts(base, data)
    slot = EngineSlot()  # one engine for every search and evaluation (on vLLM)
    target = experts_sum_average(demo, base, experts, data, preset.seed, say, slot)
    cma = {
        "search.emitter.kind": "cma_me",
        "search.emitter.groups": args.groups,
        "search.emitter.batch_size": args.batch_size,
        "search.emitter.sigma0": args.sigma0,
    }
    overrides_of = {
        "paper": {**preset.run, **PAPER_OPERATORS},
        "preset": dict(preset.run),
        "cma_me": {**preset.run, **cma},
    }
    for seed in args.seeds:
        for method in args.methods:
            overrides = overrides_of[method]
            run_dir, summary = demo.search(
                base,
                experts,
                data,
                seed,
                overrides=overrides,
                run_name=f"{method}-seed{seed}",
                slot=slot,
            )
            print(
                json.dumps(
                    {
                        "benchmark": "emitters",
                        "preset": preset.name,
                        "method": method,
                        "seed": seed,
                        **({"cma_me": cma} if method == "cma_me" else {}),
                        "experts_sum_average": target,
                        **measure(run_dir, summary, target),
                    }
                ),
                flush=True,
            )
    slot.close()


if __name__ == "__main__":
    main()
