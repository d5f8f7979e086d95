"""The Ray executor on a local CPU cluster started by cycleqd itself.

A full tiny run with two actors; an actor killed mid-run (its child is evaluated again and nothing
is lost); a driver killed mid-run and resumed; and serial vs Ray on the same seed reaching archives
of the same quality (not identical: the asynchronous order differs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import base_config

from cycleqd.config import load_config
from cycleqd.search.run import start_run

pytest.importorskip("ray")

GENERATIONS = 12


def _config(family: dict, tmp: Path, kind: str, generations: int = GENERATIONS):
    data = base_config(family, tmp, generations=generations)
    data["executor"] = {"kind": kind, "actors": 2, "actor_cpus": 0.5}
    return load_config(data=data)


def _eval_worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ray::EvalWorker" in cmd:
                pids.append(int(entry.name))
    return pids


def _metrics_generations(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return sorted(json.loads(line)["generation"] for line in lines)


@pytest.fixture(scope="module")
def serial_summary(family: dict, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("serial")
    return start_run(_config(family, tmp, "serial"), tmp / "run")


def test_ray_run_with_an_actor_killed_mid_run(
    family: dict, tmp_path: Path, serial_summary: dict
) -> None:
    killed: list[int] = []

    def chaos(event: dict) -> None:
        if event.get("phase") == "search" and event["done"] == 4 and not killed:
            pids = _eval_worker_pids()
            assert len(pids) == 2, pids
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    events: list[dict] = []

    def progress(event: dict) -> None:
        events.append(event)
        chaos(event)

    run = tmp_path / "run"
    summary = start_run(_config(family, tmp_path, "ray"), run, progress=progress)
    assert killed, "an actor was killed"
    assert any(e.get("phase") == "actor_replaced" for e in events)
    # Nothing lost: every generation evaluated and inserted exactly once.
    assert summary["generations_done"] == GENERATIONS
    assert _metrics_generations(run) == list(range(GENERATIONS))
    assert (run / "final" / "config.json").is_file()
    assert (run / "ray").is_dir() or not str(run).startswith(str(Path.home()))
    # Same seed, asynchronous order: archives of the same quality as the serial run's.
    for task, best in serial_summary["best_quality"].items():
        assert summary["best_quality"][task] >= 0.95 * best
        expert_best = max(s[task] for s in summary["expert_scores"].values())
        assert summary["best_quality"][task] >= expert_best
    for expert, scores in serial_summary["expert_scores"].items():
        assert summary["expert_scores"][expert] == pytest.approx(scores, rel=1e-5)


def test_killed_driver_resumes_with_ray(family: dict, tmp_path: Path) -> None:
    import yaml

    data = base_config(family, tmp_path, generations=GENERATIONS)
    data["executor"] = {"kind": "ray", "actors": 2, "actor_cpus": 0.5}
    # A fixed evaluation cost, so the driver is still mid-search when it is killed.
    for task in data["tasks"]:
        task["type"], task["params"] = "synthetic", {"cost_s": 0.4}
    config = tmp_path / "ray.yaml"
    config.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cycleqd.cli"]
    proc = subprocess.Popen(
        [*cmd, "run", str(config), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = run / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("generations_done", 0) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, like a lost node
    proc.wait()
    done_before = json.loads((run / "state.json").read_text())["generations_done"]
    assert done_before < GENERATIONS
    resumed = subprocess.run(
        [*cmd, "resume", str(run)], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["generations_done"] == GENERATIONS
    assert _metrics_generations(run) == list(range(GENERATIONS))
    assert summary["final"]["model"]


def test_asking_for_more_gpus_than_the_cluster_has_is_refused_at_start(
    family: dict, tmp_path: Path
) -> None:
    from cycleqd.errors import CycleQDError

    data = base_config(family, tmp_path)
    data["executor"] = {"kind": "ray", "actors": 2, "actor_cpus": 0.5, "actor_gpus": 1}
    with pytest.raises(CycleQDError, match=r"need 2 GPUs; the Ray cluster has 0"):
        start_run(load_config(data=data), tmp_path / "run")
    assert not (tmp_path / "run" / "state.json").exists()
