"""The emitters benchmark's plumbing on the `mini` preset and a tiny model: one search per
method at seed 0, a JSON line each, and the summary over seeds. It checks the wiring, not the
result: ``benchmarks/emitters.py`` on the `cpu` preset measures that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "emitters.py"


def test_the_emitters_benchmark_prints_each_method_and_their_summary(
    tiny_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    command = [
        sys.executable,
        str(SCRIPT),
        "--preset",
        "mini",
        "--model",
        str(tiny_base),
        "--evaluations",
        "3",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--experts-cache",
        str(tmp_path / "experts"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert [(x["method"], x["seed"]) for x in lines] == [("paper", 0), ("cma_me", 0)]
    for line in lines:
        assert line["evaluations"] == 3
        assert set(line["qd_score"]) == {"code", "os", "db"}
        assert 0 <= line["entered_no_archive"] <= 3
        assert 0.0 <= line["experts_sum_average"] <= 1.0
    assert lines[1]["cma_me"]["search.emitter.kind"] == "cma_me"
    assert (out / "cma_me-seed0" / "summary.json").is_file()

    results = tmp_path / "emitters.jsonl"
    results.write_text(done.stdout)
    summary = subprocess.run(
        [sys.executable, str(SCRIPT), "--summarise", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [json.loads(x) for x in summary.stdout.splitlines()]
    assert [r["method"] for r in rows] == ["paper", "cma_me"]
    for row, line in zip(rows, lines, strict=True):
        total = sum(line["qd_score"].values())
        assert row["qd_score_total"] == {"mean": total, "min": total, "max": total}
        assert row["entered_no_archive"] == [line["entered_no_archive"]]
