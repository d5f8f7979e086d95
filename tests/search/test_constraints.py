"""Constraints: tasks every child is scored on that keep it out of the archives when it falls
more than ``max_drop`` below the base model (issue 13's "an elite that loses language ability is
not kept"). Real tiny models and real tasks; the floors are checked against the base model
scored on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import base_config

from cycleqd.config import load_config
from cycleqd.errors import CycleQDError
from cycleqd.models.engine import HFEngine
from cycleqd.search.run import run_key, start_run
from cycleqd.tasks import build_task


def config(lora_family: dict, tmp: Path, data: str, *, generations: int = 12) -> dict:
    cfg = base_config(lora_family, tmp, generations=generations)
    cfg["search"]["final_model"] = "best_of"
    cfg["engine"] = {"dtype": "float32"}  # scores compared with a float32 engine below
    cfg["constraints"] = [
        {
            "name": "keep",
            "type": "likelihood",
            "params": {"data": str(lora_family["data"][data])},
            "max_drop": 0.0,
        }
    ]
    return cfg


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_children_below_the_floor_enter_no_archive(lora_family: dict, tmp_path: Path) -> None:
    """Through ``cycleqd run``, whose closing table names the floor and the rejections."""
    (tmp_path / "run.yaml").write_text(json.dumps(config(lora_family, tmp_path, "copy")))
    args = ["run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    engine = HFEngine(lora_family["base"], dtype="float32")
    task = build_task("keep", "likelihood", {"data": str(lora_family["data"]["copy"])}, "t")
    base = task.evaluate(engine).quality
    keep = summary["constraints"]["keep"]
    assert keep["base"] == pytest.approx(base, rel=1e-5)
    assert keep["floor"] == keep["base"]  # max_drop 0
    lines = metrics(tmp_path / "run")
    rejected = [m for m in lines if m.get("rejected")]
    kept = [m for m in lines if not m.get("rejected")]
    assert rejected and kept  # this seed gives both, so both paths are exercised
    assert all(m["scores"]["keep"] < keep["floor"] for m in rejected)
    assert all(m["rejected"] == ["keep"] for m in rejected)
    assert all(set(m["inserted"].values()) == {0} for m in rejected)
    assert all(m["scores"]["keep"] >= keep["floor"] for m in kept)
    assert summary["rejected"] == len(rejected)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    elites = {e["id"] for a in state["archives"] for e in a["elites"]}
    assert elites - {"expert-copy", "expert-add"}  # some children were kept
    assert all(state["scores"][i]["keep"] >= keep["floor"] for i in elites if i.startswith("g"))
    assert summary["final"]["violations"] == []
    printed = " ".join(done.stdout.split())
    assert (
        f"constraint keep: base {base:.3f}, floor {base:.3f}; {len(rejected)} children" in printed
    )


def test_best_of_never_picks_an_individual_below_a_floor(lora_family: dict, tmp_path: Path) -> None:
    """On the other file every child and one expert fall below the base; the merge of the
    archives' best elites does too, so best_of takes the best individual that keeps the floor,
    even where one below it has the better task average."""
    summary = start_run(load_config(data=config(lora_family, tmp_path, "add")), tmp_path / "run")
    floor = summary["constraints"]["keep"]["floor"]
    experts = summary["expert_scores"]
    below = sorted(e for e, sc in experts.items() if sc["keep"] < floor)
    assert summary["constraints"]["keep"]["experts_below"] == below == ["copy"]
    assert all(m.get("rejected") == ["keep"] for m in metrics(tmp_path / "run"))
    final = summary["final"]
    assert final["merge_scores"]["keep"] < floor
    assert final["chosen"] == "expert-add" and final["violations"] == []

    def mean(scores: dict) -> float:
        return (scores["copy"] + scores["add"]) / 2

    assert mean(experts["copy"]) > mean(experts["add"])  # the better average is below the floor


def test_constraint_config_is_checked_and_keys_the_run(lora_family: dict, tmp_path: Path) -> None:
    cfg = config(lora_family, tmp_path, "copy")
    with_constraint = run_key(load_config(data=cfg))
    cfg["constraints"][0]["max_drop"] = 0.05
    assert run_key(load_config(data=cfg)) != with_constraint
    cfg["constraints"][0]["name"] = "copy"
    with pytest.raises(CycleQDError, match="duplicate task or constraint name 'copy'"):
        load_config(data=cfg)
    cfg["constraints"][0] |= {"name": "keep", "max_dropp": 0.1}
    with pytest.raises(CycleQDError, match=r"constraints\.0\.max_dropp: unknown key"):
        load_config(data=cfg)
    del cfg["constraints"][0]["max_dropp"]
    cfg["constraints"][0]["params"]["data"] = "copy.jsonl"
    (tmp_path / "run.yaml").write_text(json.dumps(cfg))
    loaded = load_config(tmp_path / "run.yaml")
    assert loaded.constraints[0].params["data"] == str(tmp_path / "copy.jsonl")


def test_a_floor_no_child_reaches_changes_nothing(lora_family: dict, tmp_path: Path) -> None:
    """Every generation's randomness is keyed by (seed, generation), so a constraint that
    rejects no child leaves the search child for child as it is without one."""
    free = base_config(lora_family, tmp_path, generations=8)
    free["search"]["final_model"] = "best_of"
    free["engine"] = {"dtype": "float32"}  # as config() sets it
    loose = config(lora_family, tmp_path, "copy", generations=8)
    loose["constraints"][0]["max_drop"] = 1.0
    a = start_run(load_config(data=free), tmp_path / "free")
    b = start_run(load_config(data=loose), tmp_path / "loose")
    assert b["rejected"] == 0
    ma, mb = metrics(tmp_path / "free"), metrics(tmp_path / "loose")
    assert [m["parents"] for m in ma] == [m["parents"] for m in mb]
    assert [m["inserted"] for m in ma] == [m["inserted"] for m in mb]
    for x, y in zip(ma, mb, strict=True):
        assert {t: y["scores"][t] for t in ("copy", "add")} == pytest.approx(x["scores"])
    assert a["final"]["chosen"] == b["final"]["chosen"]
    assert "constraints" not in a and a["best_individual"] == b["best_individual"]
