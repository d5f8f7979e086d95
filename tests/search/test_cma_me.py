"""CMA-ME in the cycle (``search.emitter: cma_me``): the group genome, the emitters' state, runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from helpers import base_config

from cycleqd.config import EmitterConfig, load_config
from cycleqd.merging.basis import build_basis
from cycleqd.merging.groups import GroupGenome, group_of
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.sources import SafetensorsSource
from cycleqd.search.archive import TaskArchive
from cycleqd.search.emitters import CMAMEEmitters
from cycleqd.search.run import start_run


def test_tensors_fall_into_model_block_and_kind_groups() -> None:
    q = "model.layers.7.self_attn.q_proj.weight"
    assert group_of(q, "model") == "model"
    assert group_of(q, "block") == "block 7"
    assert group_of("model.embed_tokens.weight", "block") == "block other"
    assert group_of(q, "tensor_kind") == "model.layers.*.self_attn.q_proj.weight"
    assert group_of("model.layers.2.self_attn.q_proj.weight", "tensor_kind") == group_of(
        q, "tensor_kind"
    )


def test_a_group_genome_is_the_base_plus_scaled_task_vectors(family: dict) -> None:
    """The hand computation from the checkpoints: ``base + sum_e alpha[e, group] * tau_e``."""
    base = SafetensorsSource(family["base"])
    experts = {k: SafetensorsSource(v) for k, v in family["experts"].items()}
    basis = build_basis(base, experts, rtol=0.0)  # every direction kept: exact reconstruction
    space = GroupGenome(basis, "block")
    assert space.dim == len(experts) * len(space.groups) and len(space.groups) > 2
    solution = np.random.default_rng(0).normal(0.5, 0.5, space.dim)
    alphas = solution.reshape(len(experts), len(space.groups))
    materialiser = Materialiser(basis, base, None, torch.device("cpu"), writer=lambda w: None)
    merged = materialiser.weights(space.genome(solution))
    for name in basis.names:
        g = space.groups.index(group_of(name, "block"))
        w0 = base.read(name).float()
        hand = w0.clone()
        for e, src in enumerate(experts.values()):
            hand += float(alphas[e, g]) * (src.read(name).float() - w0)
        torch.testing.assert_close(merged[name], hand, rtol=1e-4, atol=1e-5)


def _archives() -> list[TaskArchive]:
    return [
        TaskArchive(task=t, bc_tasks=[o], ranges=[(0.0, 1.0)], bins=[5])
        for t, o in (("copy", "add"), ("add", "copy"))
    ]


def _emitters(basis, **config) -> CMAMEEmitters:
    scores = {"e0": {"copy": 0.8, "add": 0.1}, "e1": {"copy": 0.2, "add": 0.7}}
    return CMAMEEmitters(
        EmitterConfig(kind="cma_me", groups="model", batch_size=3, **config),
        GroupGenome(basis, "model"),
        _archives(),
        [0, 1],
        scores,
        seed=3,
    )


def _scores(solution: np.ndarray) -> dict[str, float]:
    """A made-up fitness of the solution (scales of two experts): each task wants its expert."""
    a, b = float(solution[0]), float(solution[1])
    return {"copy": float(np.clip(1 - abs(a - 1.2), 0, 1)), "add": float(np.clip(b / 2, 0, 1))}


def _drive(emitters: CMAMEEmitters, generations: range) -> list[np.ndarray]:
    proposed = []
    for g in generations:
        solution, where = emitters.propose(g)
        assert where["emitter"] == g % 2
        proposed.append(solution)
        emitters.record(g, _scores(solution), rejected=False)
    return proposed


def test_emitter_state_round_trips_exactly(family: dict) -> None:
    """Saved mid-batch and restored into fresh emitters, the rest of the run proposes exactly
    what the uninterrupted emitters propose (CMA-ES, shadows and random streams included)."""
    base = SafetensorsSource(family["base"])
    experts = {k: SafetensorsSource(family["experts"][k]) for k in ("e0", "e1")}
    basis = build_basis(base, experts)
    whole = _emitters(basis)
    straight = _drive(whole, range(20))
    first = _emitters(basis)
    head = _drive(first, range(7))  # the second emitter's batch is open here
    saved = json.loads(json.dumps(first.to_state()))  # as the run's state.json holds it
    again = _emitters(basis)
    again.restore(saved)
    tail = _drive(again, range(7, 20))
    assert all(np.array_equal(x, y) for x, y in zip(straight, head + tail, strict=True))
    assert whole.stats()[0]["iterations"] == 20 // 2 // 3  # told after each batch of three
    assert len({tuple(x) for x in straight}) == 20  # CMA-ES samples, not one point
    # a generation proposed again before its score came back gets the same solution
    fresh = _emitters(basis)
    one, _ = fresh.propose(0)
    assert np.array_equal(fresh.propose(0)[0], one)


def test_a_full_batch_in_flight_makes_the_loop_wait(family: dict) -> None:
    base = SafetensorsSource(family["base"])
    basis = build_basis(base, {k: SafetensorsSource(family["experts"][k]) for k in ("e0", "e1")})
    emitters = _emitters(basis)
    for g in (0, 2, 4):  # the first emitter's whole batch
        assert emitters.propose(g) is not None
    assert emitters.propose(6) is None  # waits: CMA-ES cannot ask before it is told
    for g in (0, 2, 4):
        emitters.record(g, {"copy": 0.5, "add": 0.5}, rejected=g == 2)
    assert emitters.propose(6) is not None


def _cma_config(family: dict, tmp_path: Path, generations: int) -> dict:
    data = base_config(family, tmp_path, generations=generations)
    data["search"]["plot_every"] = 0
    data["search"]["emitter"] = {"kind": "cma_me", "groups": "block", "batch_size": 3}
    return data


def test_a_cma_me_run_fills_archives_and_ends_with_a_final_model(
    family: dict, tmp_path: Path
) -> None:
    config = load_config(data=_cma_config(family, tmp_path, generations=12))
    summary = start_run(config, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["emitter"]["emitter"] for x in lines] == [g % 2 for g in range(12)]
    assert all(len(x["solution"]) == 2 * (len(x["solution"]) // 2) for x in lines)
    assert any(sum(x["inserted"].values()) for x in lines)
    assert summary["generations_done"] == 12
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["emitters"]["format"] == 1
    # six children per archive's emitter, in CMA-ES batches of three: two iterations each
    emitters = summary["emitters"]
    assert set(emitters) == set(summary["archives"])
    assert [e["iterations"] for e in emitters.values()] == [2, 2]
    assert all(e["open"] == 0 for e in emitters.values())


def test_a_killed_cma_me_run_resumes_to_the_same_archives(family: dict, tmp_path: Path) -> None:
    """SIGKILLed mid-search and resumed: the same children and archives as uninterrupted."""
    data = _cma_config(family, tmp_path, generations=14)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    start_run(load_config(path), tmp_path / "reference")
    run = tmp_path / "killed"
    metrics = run / "metrics.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cycleqd.cli", "run", str(path), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, "never reached generation 5"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", "resume", str(run)], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    ours = json.loads((run / "state.json").read_text())
    ref = json.loads((tmp_path / "reference" / "state.json").read_text())
    assert ours["archives"] == ref["archives"]
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    ref_lines = [
        json.loads(x) for x in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [x["solution"] for x in lines] == [x["solution"] for x in ref_lines]
    assert [x["scores"] for x in lines] == [x["scores"] for x in ref_lines]
