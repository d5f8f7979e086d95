"""Reusing stored evaluation results: only when weights, tasks, data and code are all the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cycleqd.errors import CycleQDError
from cycleqd.evaluate import evaluate_model, evaluation_key, load_eval_config

ROWS = [
    {"question": "2 + 2 =", "choices": ["4", "5", "22", "0"], "answer": 0},
    {"question": "The sky is", "choices": ["blue", "a fish", "loud", "seven"], "answer": 0},
]


def _data(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"context": r["question"], **r}) + "\n" for r in rows))
    return path


def test_a_second_evaluation_reuses_stored_results_and_any_change_reevaluates(
    tmp_path: Path, family: dict
) -> None:
    data = _data(tmp_path / "mc.jsonl", ROWS)
    config = load_eval_config(None, [f"multiple_choice:{data}"])
    out = tmp_path / "results" / "results.json"

    first = evaluate_model(family["base"], config, out, reuse=True)
    assert "reused" not in first and first["key"] == evaluation_key(family["base"], config)
    second = evaluate_model(family["base"], config, out, reuse=True)
    assert second["reused"] is True and second["tasks"] == first["tasks"]

    # other weights: a different key, evaluated again
    other = evaluate_model(family["experts"]["e0"], config, out, reuse=True)
    assert "reused" not in other and other["key"] != first["key"]

    # the same file name with other content: evaluated again
    evaluate_model(family["base"], config, out, reuse=True)
    _data(data, ROWS[:1])
    changed = evaluate_model(family["base"], config, out, reuse=True)
    assert "reused" not in changed and changed["tasks"]["multiple_choice"]["samples"] == 1

    # without reuse, or with a transcript gone, it always evaluates
    assert "reused" not in evaluate_model(family["base"], config, out)
    Path(changed["tasks"]["multiple_choice"]["transcripts"]).unlink()
    assert "reused" not in evaluate_model(family["base"], config, out, reuse=True)


def test_the_key_follows_model_content_not_its_path_or_card(tmp_path: Path, family: dict) -> None:
    data = _data(tmp_path / "mc.jsonl", ROWS)
    config = load_eval_config(None, [f"multiple_choice:{data}"])
    copy = tmp_path / "copy"
    shutil.copytree(family["base"], copy)
    assert evaluation_key(copy, config) == evaluation_key(family["base"], config)
    # a model card cannot change an output (mergekit reorders its card between processes)
    (copy / "README.md").write_text("# another card\n")
    assert evaluation_key(copy, config) == evaluation_key(family["base"], config)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert evaluation_key(copy, config) != evaluation_key(family["base"], config)
    limited = load_eval_config(None, [f"multiple_choice:{data}"], limit=1)
    assert evaluation_key(copy, limited) != evaluation_key(copy, config)


def test_a_folder_that_holds_no_model_is_named(tmp_path: Path, family: dict) -> None:
    config = load_eval_config(None, [f"likelihood:{family['data']['copy']}"], 2)
    with pytest.raises(CycleQDError, match="not a Hugging Face model or peft adapter directory"):
        evaluate_model(tmp_path / "missing", config, tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()
