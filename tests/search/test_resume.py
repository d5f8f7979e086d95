"""Crash safety: a run SIGKILLed at several points and resumed ends exactly like an
uninterrupted run with the same seed (same archives, same final genome and model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import base_config
from safetensors.torch import load_file

from cycleqd.config import dump_config, load_config
from cycleqd.errors import CycleQDError
from cycleqd.search import run as run_module
from cycleqd.search.run import (
    extend_run,
    resume_run,
    run_key,
    search_config,
    shared_seeding,
    start_or_resume_run,
    start_run,
)

GENERATIONS = 30


def launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cycleqd.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("kill point never reached")


def metrics_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def archives(run: Path) -> list:
    return json.loads((run / "state.json").read_text())["archives"]


def test_killed_and_resumed_run_equals_uninterrupted_run(family: dict, tmp_path: Path) -> None:
    data = base_config(family, tmp_path, generations=GENERATIONS)
    data["search"]["plot_every"] = 0
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(data))

    reference = tmp_path / "reference"
    start_run(load_config(config_path), reference)

    run = tmp_path / "killed"
    kill_points = [
        ("seeding", lambda: (run / "individuals").is_dir()),
        ("early search", lambda: metrics_lines(run) >= 3),
        ("mid search", lambda: metrics_lines(run) >= 14),
        ("late search", lambda: metrics_lines(run) >= GENERATIONS - 4),
        ("final merge", lambda: (run / "individuals" / "final.safetensors").exists()),
    ]
    killed = []
    proc = launch("run", str(config_path), "--out", str(run))
    for name, ready in kill_points:
        if kill_when(proc, ready):
            killed.append(name)
        proc = launch("resume", str(run))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert len(killed) >= 4, killed  # the kills really interrupted the run

    assert archives(run) == archives(reference)
    summary = json.loads((run / "summary.json").read_text())
    ref_summary = json.loads((reference / "summary.json").read_text())
    assert summary["final"]["scores"] == ref_summary["final"]["scores"]
    assert summary["generations_done"] == GENERATIONS
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_lines = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [x["generation"] for x in lines] == list(range(GENERATIONS))
    assert [x["scores"] for x in lines] == [x["scores"] for x in ref_lines]
    ours = load_file(str(run / "individuals" / "final.safetensors"))
    ref = load_file(str(reference / "individuals" / "final.safetensors"))
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours)
    ours = load_file(str(run / "final" / "model.safetensors"))
    ref = load_file(str(reference / "final" / "model.safetensors"))
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours)
    assert not list((run / "individuals").glob("*.tmp"))


class _Stop(Exception):
    pass


def test_start_or_resume_run_reuses_resumes_or_starts_by_run_key(
    family: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same key and finished: reused without evaluating; same key and cut off: resumed, ending
    as an uninterrupted run; another seed or another expert file: a new run."""
    data = base_config(family, tmp_path, generations=6)
    data["search"]["plot_every"] = 0
    config = load_config(data=data)
    heard: list[str] = []

    reference, how = start_or_resume_run(config, tmp_path / "reference", announce=heard.append)
    assert how == "new" and heard == ["new"]
    assert (tmp_path / "reference" / "run_key").read_text().strip() == run_key(config)

    events: list[dict] = []

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was reused through a new session")

    monkeypatch.setattr(run_module, "Session", no_session)
    again, how = start_or_resume_run(config, tmp_path / "reference", progress=events.append)
    assert how == "reused" and again == reference
    monkeypatch.undo()
    assert not [e for e in events if e.get("phase") in ("seeding", "search", "final")]

    def crash_after_two(event: dict) -> None:
        if event.get("phase") == "search" and event["done"] >= 2:
            raise _Stop

    run = tmp_path / "cut"
    with pytest.raises(_Stop):
        start_or_resume_run(config, run, progress=crash_after_two)
    assert json.loads((run / "state.json").read_text())["generations_done"] == 2
    resumed, how = start_or_resume_run(config, run)
    assert how == "resumed"
    assert resumed["final"]["scores"] == reference["final"]["scores"]
    assert archives(run) == archives(tmp_path / "reference")

    other_seed = load_config(data={**data, "seed": 1})
    assert run_key(other_seed) != run_key(config)
    _, how = start_or_resume_run(other_seed, run)
    assert how == "new" and yaml.safe_load((run / "config.yaml").read_text())["seed"] == 1

    # the same config text over a changed expert file is another run
    (tmp_path / "e1").mkdir()
    for f in Path(family["experts"]["e1"]).iterdir():
        (tmp_path / "e1" / f.name).write_bytes(f.read_bytes())
    moved = {**data, "experts": [data["experts"][0], {"name": "add", "path": str(tmp_path / "e1")}]}
    key = run_key(load_config(data=moved))
    weights = next((tmp_path / "e1").glob("*.safetensors"))
    content = weights.read_bytes()
    weights.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    assert run_key(load_config(data=moved)) != key


def test_a_final_stage_variant_derives_from_a_finished_search(family: dict, tmp_path: Path) -> None:
    """A run that differs from a finished one only in its final stage copies that search and
    ends exactly as the same config run from scratch; another seed is a new search."""
    data = base_config(family, tmp_path, generations=6)
    data["search"]["plot_every"] = 0
    source = tmp_path / "paper"
    start_or_resume_run(load_config(data=data), source)
    search = {**data["search"], "final_merge": "ties", "final_model": "best_of"}
    variant = load_config(data={**data, "search": search})
    same = dump_config(search_config(load_config(data=data)))
    assert dump_config(search_config(variant)) == same
    assert run_key(variant) != run_key(load_config(data=data))

    heard: list[str] = []
    events: list[dict] = []
    derived, how = start_or_resume_run(
        variant,
        tmp_path / "derived",
        announce=heard.append,
        progress=events.append,
        share=[tmp_path / "missing", source],
    )
    assert how == "derived" and heard == ["derived"]
    assert not [e for e in events if e.get("phase") in ("seeding", "search")]
    assert [e["phase"] for e in events if e.get("phase") == "final"] == ["final"]
    scratch = start_run(variant, tmp_path / "scratch")
    assert derived["final"] == {**scratch["final"], "model": derived["final"]["model"]}
    assert archives(tmp_path / "derived") == archives(tmp_path / "scratch")
    ours = load_file(str(tmp_path / "derived" / "individuals" / "final.safetensors"))
    ref = load_file(str(tmp_path / "scratch" / "individuals" / "final.safetensors"))
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours)
    assert (tmp_path / "derived" / "run_key").read_text().strip() == run_key(variant)
    # the derived run is an ordinary run of its own key: a rerun reuses it
    _, how = start_or_resume_run(variant, tmp_path / "derived", share=[source])
    assert how == "reused"

    # another seed is another search; it takes the source's seeding (the experts' scores)
    other_seed = load_config(data={**data, "seed": 1, "search": search})
    events.clear()
    seeded, how = start_or_resume_run(
        other_seed, tmp_path / "seed1", share=[source], progress=events.append
    )
    assert how == "seeded"
    assert all(e.get("shared") for e in events if e.get("phase") == "seeding")
    fresh = start_run(other_seed, tmp_path / "seed1-fresh")
    assert seeded["final"] == {**fresh["final"], "model": seeded["final"]["model"]}
    assert archives(tmp_path / "seed1") == archives(tmp_path / "seed1-fresh")
    seeding = json.loads((tmp_path / "seed1" / "state.json").read_text())["expert_scores"]
    assert seeding == json.loads((source / "state.json").read_text())["expert_scores"]
    # another engine batch size, or changed files behind the source's key, is seeded afresh
    batch = load_config(data={**data, "seed": 1, "engine": {"batch_size": 3}})
    assert shared_seeding(source, batch) is None
    (source / "run_key").write_text("stale\n")
    assert shared_seeding(source, other_seed) is None


def test_cli_run_search_from_a_finished_run(family: dict, tmp_path: Path) -> None:
    """`cycleqd run --search-from RUN` runs only the final stage on RUN's archives; a run that
    is another search, or no run, is refused with a one-line reason and exit code 2."""
    data = base_config(family, tmp_path, generations=4)
    data["search"]["plot_every"] = 0
    source = tmp_path / "paper"
    start_run(load_config(data=data), source)
    variant = {**data, "search": {**data["search"], "final_merge": "assemble"}}
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(variant))

    proc = launch("run", str(path), "--out", str(tmp_path / "cli"), "--search-from", str(source))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    state = json.loads((tmp_path / "cli" / "state.json").read_text())
    assert state["final"]["merge"] == "assemble"
    assert state["archives"] == archives(source)
    assert (tmp_path / "cli" / "metrics.jsonl").read_text() == (
        source / "metrics.jsonl"
    ).read_text()

    path.write_text(yaml.safe_dump({**variant, "seed": 3}))
    for where, reason in ((source, "another search"), (tmp_path, "not a cycleqd run")):
        proc = launch("run", str(path), "--out", str(tmp_path / "no"), "--search-from", str(where))
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 2 and reason in err, err
        assert not (tmp_path / "no").exists()  # nothing written for a refused source


def test_an_extended_run_is_the_longer_run(family: dict, tmp_path: Path) -> None:
    """A finished 3-generation run raised to 7 ends as the 7-generation run started from
    scratch (archives, metrics, final genome), keeps a run key the longer config reuses, and
    refuses to be cut; `start_or_resume_run` extends a shorter run of the same search."""
    data = base_config(family, tmp_path, generations=3)
    data["search"]["plot_every"] = 0
    short = load_config(data=data)
    longer = load_config(data={**data, "search": {**data["search"], "generations": 7}})
    scratch = start_run(longer, tmp_path / "scratch")

    run = tmp_path / "extended"
    first, _ = start_or_resume_run(short, run)
    assert first["generations_done"] == 3
    extend_run(run, 7)
    assert (run / "run_key").read_text().strip() == run_key(longer)
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "search" and state["final"] is None
    events: list[dict] = []
    summary = resume_run(run, progress=events.append)
    assert [e["done"] for e in events if e.get("phase") == "search"] == [4, 5, 6, 7]
    assert summary["final"] == {**scratch["final"], "model": summary["final"]["model"]}
    assert archives(run) == archives(tmp_path / "scratch")
    assert (run / "metrics.jsonl").read_text() != ""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "scratch" / "metrics.jsonl").read_text().splitlines()]
    assert [x["scores"] for x in lines] == [x["scores"] for x in ref]
    ours = load_file(str(run / "individuals" / "final.safetensors"))
    theirs = load_file(str(tmp_path / "scratch" / "individuals" / "final.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    _, how = start_or_resume_run(longer, run)
    assert how == "reused"
    with pytest.raises(CycleQDError, match="extended, not cut"):
        extend_run(run, 5)

    heard: list[str] = []
    again = tmp_path / "again"
    start_or_resume_run(short, again)
    events.clear()
    summary, how = start_or_resume_run(longer, again, announce=heard.append, progress=events.append)
    assert how == "extended" and heard == ["extended"]
    assert not [e for e in events if e.get("phase") == "seeding"]
    assert archives(again) == archives(tmp_path / "scratch")
    # another seed with more generations is another search, not an extension
    other = load_config(data={**data, "seed": 1, "search": {**data["search"], "generations": 9}})
    _, how = start_or_resume_run(other, again)
    assert how == "new"


def test_extending_with_several_children_in_flight_drops_the_run_key(
    family: dict, tmp_path: Path
) -> None:
    """With two children evaluated together the extension is not the longer run (the short
    run drained its pipeline), so its key is removed and the demo's reuse never takes it for
    one; `cycleqd resume --generations` still extends it."""
    data = base_config(family, tmp_path, generations=2)
    data["search"]["plot_every"] = 0
    data["executor"] = {"children_per_batch": 2}
    run = tmp_path / "batched"
    start_or_resume_run(load_config(data=data), run)
    proc = launch("resume", str(run), "--generations", "4")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert not (run / "run_key").exists()
    state = json.loads((run / "state.json").read_text())
    assert state["generations_done"] == 4 and state["phase"] == "done"
    assert yaml.safe_load((run / "config.yaml").read_text())["search"]["generations"] == 4
    longer = load_config(data={**data, "search": {**data["search"], "generations": 6}})
    _, how = start_or_resume_run(longer, run)
    assert how == "new"
