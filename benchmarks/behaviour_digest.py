"""Digests of what a refactor must not change: run this before and after, and diff the JSON.

It records, under OUT:

1. a 6-generation run of ``examples/tiny.yaml`` (on the tiny family in ``--tiny``, built once by
   ``cycleqd models make-tiny`` if missing: keep that folder between the two runs, so both
   search the same models);
2. ``cycleqd demo --preset mini`` on a tiny random base, with two seeds and the ablation (five
   searches: the preset's, its second seed, the paper's operators, each departure alone);
3. every procedural suite's samples for seeds 0-2, every split and level (24 each).

and prints one JSON object: a SHA-256 per artefact of what decides behaviour (archives, scores,
final genomes' scores, metrics without timings, the demo's table without timings, the samples).
Equal digests, equal behaviour. Usage::

    python benchmarks/behaviour_digest.py /tmp/before --tiny /tmp/tiny-family > before.json
    # ...change the code...
    python benchmarks/behaviour_digest.py /tmp/after --tiny /tmp/tiny-family > after.json
    diff before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    {"context": "Question: 2 + 2 =\nAnswer:", "choices": ["4", "5", "22", "0"], "answer": 0},
    {"context": "Question: The sky is\nAnswer:", "choices": ["blue", "a fish"], "answer": 0},
    {"context": "Question: Ice is\nAnswer:", "choices": ["hot", "cold", "loud"], "answer": 1},
    {"context": "Question: 3 > 2?\nAnswer:", "choices": ["no", "yes"], "answer": 1},
]


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def run_state(path: Path) -> dict[str, Any]:
    """The parts of ``state.json`` that decide behaviour (the final model's path left out)."""
    state = json.loads(path.read_text())
    (state.get("final") or {}).pop("model", None)
    keys = ("archives", "scores", "expert_scores", "bc_ranges", "final", "generations_done")
    return {k: state.get(k) for k in keys}


def metrics(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def tiny_run(out: Path, family: Path) -> Path:
    if not (family / "suite.json").is_file():
        subprocess.run([sys.executable, "-m", "cycleqd.cli", "models", "make-tiny", str(family)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    config = (ROOT / "examples" / "tiny.yaml").read_text()
    config = config.replace("generations: 60", "generations: 6").replace("tiny/", f"{family}/")
    (out / "tiny6.yaml").write_text(config)
    run = out / "tiny-run"
    subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", "run", str(out / "tiny6.yaml"), "--out", str(run),
         "--force"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return run


def mini_demo(out: Path) -> Path:
    from cycleqd.demo.pipeline import Demo, DemoSettings
    from cycleqd.demo.presets import PRESETS

    try:
        from cycleqd.testing.tiny import build_char_tokenizer, build_random_model
    except ImportError:  # before the fixtures left the product (to digest older commits)
        from cycleqd.models.tiny import (  # type: ignore[no-redef]
            build_char_tokenizer,
            build_random_model,
        )

    base = out / "tiny-base"
    tok = build_char_tokenizer()
    build_random_model("llama", tok, seed=0, hidden=32, intermediate=64, layers=2).save_pretrained(
        base
    )
    tok.save_pretrained(base)
    questions = out / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    demo = out / "demo"
    shutil.rmtree(demo, ignore_errors=True)
    shared = ROOT.parent / "shared" / "data"
    settings = DemoSettings(
        out=demo,
        preset=PRESETS["mini"],
        model=base,
        benchmark_data=shared if shared.is_dir() else None,
        experts_cache=out / "experts",
        seeds=2,
        ablation=True,
        language_data=questions,
    )
    Demo(settings, say=lambda message: None).run()
    return demo


def suite_samples() -> dict[str, Any]:
    from cycleqd.tasks.suites import SPLITS, get_suite, suite_names

    out = {}
    for name in suite_names():
        suite = get_suite(name)
        for seed in range(3):
            for split in SPLITS:
                for level in (None, *suite.levels):
                    out[f"{name}/{seed}/{split}/{level}"] = suite.generate(split, 24, seed, level)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the recorded runs")
    parser.add_argument("--tiny", type=Path, required=True, help="tiny family (kept between runs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, str] = {"samples": digest(suite_samples())}
    run = tiny_run(args.out, args.tiny.resolve())
    result["tiny-run/state"] = digest(run_state(run / "state.json"))
    result["tiny-run/metrics"] = digest(metrics(run / "metrics.jsonl"))
    demo = mini_demo(args.out)
    for state in sorted(demo.glob("*/state.json")):
        result[f"demo/{state.parent.name}/state"] = digest(run_state(state))
        rows = metrics(state.parent / "metrics.jsonl")
        result[f"demo/{state.parent.name}/metrics"] = digest(rows)
    table = json.loads((demo / "table.json").read_text())
    table.pop("timings_s", None)
    result["demo/table.json"] = digest(table)
    result["demo/table.md"] = digest((demo / "table.md").read_text())
    print(json.dumps({"benchmark": "behaviour_digest", "digests": result}, indent=1))


if __name__ == "__main__":
    main()
