"""A search whose children share forward passes ends exactly as one that materialises each child.

Same seed, same ``children_per_batch`` (so the same children are bred from the same archive
states); one run evaluates each group in shared passes over the expert bases, the other loads every
child into the model alone. In float32 the archives (which child holds which cell), the parents
of every child and the final choice are identical; likelihood scores agree to float32 rounding
(the two paths sum the same products in a different order), exact-match scores exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import base_config

from cycleqd.config import load_config
from cycleqd.search.run import start_run


def run(family: dict, tmp: Path, population: str) -> Path:
    data = base_config(family, tmp, generations=7)
    data["executor"] = {"children_per_batch": 3, "population": population}
    data["engine"] = {"dtype": "float32"}
    data["search"]["final_model"] = "best_of"
    start_run(load_config(data=data), tmp / population)
    return tmp / population


def test_shared_passes_give_the_same_run(lora_family: dict, tmp_path: Path) -> None:
    on, off = run(lora_family, tmp_path, "on"), run(lora_family, tmp_path, "off")
    s_on = json.loads((on / "state.json").read_text())
    s_off = json.loads((off / "state.json").read_text())
    cells = lambda s: [[(e["id"], e["cell"]) for e in a["elites"]] for a in s["archives"]]  # noqa: E731
    assert cells(s_on) == cells(s_off)
    assert s_on["scores"].keys() == s_off["scores"].keys()
    for child, scores in s_on["scores"].items():
        assert scores["add"] == s_off["scores"][child]["add"]  # exact match: discrete
        assert scores["copy"] == pytest.approx(s_off["scores"][child]["copy"], rel=1e-5)
    assert s_on["final"]["chosen"] == s_off["final"]["chosen"]
    m_on = [json.loads(x) for x in (on / "metrics.jsonl").read_text().splitlines()]
    m_off = [json.loads(x) for x in (off / "metrics.jsonl").read_text().splitlines()]
    assert [m["parents"] for m in m_on] == [m["parents"] for m in m_off]
    assert [m["inserted"] for m in m_on] == [m["inserted"] for m in m_off]
    # the log says which path evaluated each child: groups of 3 (the last holds the rest)
    assert {m["evaluation"] for m in m_on} == {"batched(3)", "materialised: alone in its group"}
    assert all(m["evaluation"].startswith("materialised") for m in m_off)


def test_ray_actors_evaluate_their_groups_in_shared_passes(
    lora_family: dict, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    data = base_config(lora_family, tmp_path, generations=6)
    data["executor"] = {
        "kind": "ray",
        "actors": 1,
        "actor_cpus": 0.5,
        "children_per_batch": 3,
        "population": "on",
    }
    summary = start_run(load_config(data=data), tmp_path / "ray")
    assert summary["generations_done"] == 6
    metrics = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(m["generation"] for m in metrics) == list(range(6))
    assert {m["evaluation"] for m in metrics} == {"batched(3)"}
