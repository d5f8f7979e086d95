"""Does the same model on the same samples get the same score twice, and if not, why not?

Scores one demo expert (its own genome, materialised) on the demo's *validation* splits several
times in one process, for each dtype and engine batch size asked for, and compares every
sample's transcript between repeats and between batch sizes. Where two transcripts of one sample
differ, the first differing message says where the difference came from: an ``assistant``
message is the model's greedy decoding (numerics: dtype, batch shape), a ``user`` message is the
environment's reply (a shell or database answer that is not the same twice, e.g. a time, a PID
or a process count), which no numeric setting can fix.

Prints one JSON line per dtype with each batch size's scores per repeat, how many samples
differed between repeats and against the first batch size, and the source of each difference.

Usage::

    python benchmarks/eval_reproducibility.py [--expert os] [--dtypes bfloat16 float32]
        [--batch-sizes 48 8] [--repeats 2] [--n-val N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any


def transcript(record: dict[str, Any]) -> list[dict[str, str]]:
    """A sample's conversation, or its single output for one-shot tasks."""
    if "messages" in record:
        return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    return [{"role": "assistant", "content": record.get("output", "")}]


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """``None`` if the two records agree; else the role of the first message that differs."""
    ta, tb = transcript(a), transcript(b)
    for ma, mb in zip(ta, tb, strict=False):
        if ma != mb:
            return ma["role"]
    if len(ta) != len(tb):
        return "length"
    return None if a["score"] == b["score"] else "grading"


def compare(
    first: dict[str, list[dict[str, Any]]], second: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Samples whose transcripts differ between two evaluations, per task, and why."""
    out: dict[str, Any] = {}
    for task, records in first.items():
        by_id = {r["sample_id"]: r for r in second[task]}
        sources = Counter()
        for r in records:
            source = first_difference(r, by_id[r["sample_id"]])
            if source is not None:
                sources[source] += 1
        out[task] = {"differing_samples": sum(sources.values()), "first_difference": sources}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--expert", default="os", help="code, os or db")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[48, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-val", type=int, default=None)
    args = parser.parse_args()

    from demo_inputs import say, validation_config

    from cycleqd.merging.genome import expert_genome
    from cycleqd.search.executors.serial import GroupEvaluator
    from cycleqd.search.session import Session

    with tempfile.TemporaryDirectory(prefix="cqd-repro-") as tmp:
        for dtype in args.dtypes:
            config, preset = validation_config(Path(tmp), preset=args.preset, n_val=args.n_val)
            runs: dict[int, list[dict[str, list[dict[str, Any]]]]] = {}
            scores: dict[int, list[dict[str, float]]] = {}
            for batch in args.batch_sizes:
                engine = config.engine.model_copy(update={"dtype": dtype, "batch_size": batch})
                session = Session(config.model_copy(update={"engine": engine}))
                names = [e for e in session.basis.experts]
                genome = expert_genome(session.basis, names.index(args.expert))
                evaluator = GroupEvaluator(
                    session.materialiser, session.engine, session.tasks, mode="off"
                )
                runs[batch], scores[batch] = [], []
                for repeat in range(args.repeats):
                    result = evaluator.evaluate([genome])[0]
                    runs[batch].append({t: r.records for t, r in result.items()})
                    scores[batch].append({t: round(r.quality, 4) for t, r in result.items()})
                    say(f"{dtype} batch {batch} repeat {repeat}: {scores[batch][-1]}")
                del session
            reference = args.batch_sizes[0]
            print(
                json.dumps(
                    {
                        "benchmark": "eval_reproducibility",
                        "expert": args.expert,
                        "dtype": dtype,
                        "n_val": preset.n_val if args.n_val is None else args.n_val,
                        "scores": {str(b): s for b, s in scores.items()},
                        "between_repeats": {str(b): compare(r[0], r[-1]) for b, r in runs.items()},
                        f"against_batch_{reference}": {
                            str(b): compare(runs[reference][0], r[0])
                            for b, r in runs.items()
                            if b != reference
                        },
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
