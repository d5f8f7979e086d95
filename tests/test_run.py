"""Whole runs through the CLI: the run directory, export, reports and every user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import base_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def write_config(tmp_path: Path, family: dict, **search) -> Path:
    data = base_config(family, tmp_path)
    data["search"].update(search)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def finished_run(family: dict, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    config = write_config(tmp, family, generations=24, plot_every=10)
    result = cli("run", str(config), "--out", str(tmp / "out"))
    assert result.returncode == 0, result.stderr
    return tmp / "out"


def test_run_directory_contents(finished_run: Path) -> None:
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["generations_done"] == 24
    assert set(summary["best_quality"]) == {"copy", "add"}
    state = json.loads((finished_run / "state.json").read_text())
    for archive in state["archives"]:
        stats = summary["archives"][archive["task"]]
        assert stats["coverage"] == len(archive["elites"]) / 5
        assert stats["qd_score"] == pytest.approx(sum(e["quality"] for e in archive["elites"]))
    assert summary["archives"]["copy"]["qd_score"] > 0
    assert set(summary["final"]["scores"]) == {"copy", "add"}
    assert summary["final"]["model"].endswith("final")
    lines = (finished_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == list(range(24))
    assert [json.loads(x)["task"] for x in lines[:4]] == ["copy", "add", "copy", "add"]
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert Path(config["base_model"]).is_absolute()
    for name in ("archive_copy.png", "archive_add.png", "progress.png"):
        assert (finished_run / "plots" / name).stat().st_size > 1000
    kept = {p.name for p in (finished_run / "individuals").iterdir()}
    elites = {e["id"] for a in state["archives"] for e in a["elites"]}
    assert {f"{i}.safetensors" for i in elites} <= kept
    # individuals are genomes, far smaller than the model
    model_bytes = (finished_run / "final" / "model.safetensors").stat().st_size
    assert max((finished_run / "individuals" / k).stat().st_size for k in kept) < model_bytes


def test_final_model_loads_in_transformers_and_scores_as_reported(
    finished_run: Path, family: dict
) -> None:
    model = AutoModelForCausalLM.from_pretrained(finished_run / "final")
    tok = AutoTokenizer.from_pretrained(finished_run / "final")
    out = model.generate(**tok(["1+2="], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] >= 4
    # the exported weights are the base plus the final genome's task vector
    final = load_file(str(finished_run / "final" / "model.safetensors"))
    base = load_file(str(Path(family["base"]) / "model.safetensors"))
    assert set(final) == set(base)
    assert any(not torch.equal(final[k], base[k]) for k in base)
    from cycleqd.models.engine import HFEngine
    from cycleqd.tasks import build_task

    engine = HFEngine(finished_run / "final")
    task = build_task("copy", "likelihood", {"data": str(family["data"]["copy"])}, "tasks.0")
    summary = json.loads((finished_run / "summary.json").read_text())
    assert task.evaluate(engine).quality == pytest.approx(summary["final"]["scores"]["copy"], 1e-5)


def test_export_best_of_and_report(finished_run: Path, tmp_path: Path) -> None:
    result = cli("export", str(finished_run), "--best-of", "add", "--out", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m") is not None
    again = cli("export", str(finished_run), "--best-of", "add", "--out", str(tmp_path / "m"))
    assert again.returncode == 2 and "--force" in again.stderr
    bad = cli("export", str(finished_run), "--best-of", "nope", "--out", str(tmp_path / "n"))
    assert bad.returncode == 2 and "no task named 'nope'" in bad.stderr
    (finished_run / "plots" / "progress.png").unlink()
    report = cli("report", str(finished_run))
    assert report.returncode == 0, report.stderr
    assert (finished_run / "plots" / "progress.png").is_file()


def one_line_error(result: subprocess.CompletedProcess, *, alone: bool = True) -> str:
    """The error line of a failed command; ``alone``: nothing else was printed before it."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and sum(x.startswith("error") for x in lines) == 1
    if alone:
        assert len(lines) == 1, result.stderr
    return lines[-1]


def test_existing_run_directory_needs_force(finished_run: Path, family: dict, tmp_path) -> None:
    config = write_config(tmp_path, family, generations=1)
    before = (finished_run / "state.json").read_text()
    msg = one_line_error(cli("run", str(config), "--out", str(finished_run)))
    assert "already exists" in msg and "--force" in msg
    assert (finished_run / "state.json").read_text() == before


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["search"].update(generatons=3), "search.generatons: unknown key"),
        (lambda c: c["search"].update(generations="many"), "search.generations"),
        (lambda c: c["tasks"][1]["bc"].update(bins=0), "tasks.1.bc.bins"),
        (lambda c: c["tasks"][0].update(type="nope"), "tasks.0.type: unknown task type 'nope'"),
        (lambda c: c["tasks"][0]["params"].update(extra=1), "tasks.0.params.extra: unknown key"),
        (lambda c: c["tasks"][0]["params"].update(data="/nonexistent.jsonl"), "/nonexistent.jsonl"),
        (lambda c: c["experts"][0].update(path="/nonexistent"), "/nonexistent"),
        (lambda c: c.update(tasks=c["tasks"][:1]), "tasks"),
    ],
)
def test_bad_config_is_one_line_error(family: dict, tmp_path: Path, mutate, expected) -> None:
    data = base_config(family, tmp_path)
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    msg = one_line_error(cli("run", str(path), "--out", str(tmp_path / "out")))
    assert expected in msg
    assert not (tmp_path / "out").exists()


def test_set_overrides_and_bad_set(family: dict, tmp_path: Path) -> None:
    config = write_config(tmp_path, family, generations=50)
    result = cli(
        "run",
        str(config),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "search.generations=2",
        "--set",
        "search.mutation.kind=gaussian",
        "--set",
        "tasks.0.bc.bins=3",
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert resolved["search"]["generations"] == 2
    assert resolved["search"]["mutation"]["kind"] == "gaussian"
    assert json.loads((tmp_path / "o" / "state.json").read_text())["archives"][1]["bins"] == [3]
    msg = one_line_error(
        cli("run", str(config), "--out", str(tmp_path / "p"), "--set", "tasks.7.bc=1")
    )
    assert "tasks.7" in msg
    msg = one_line_error(cli("run", str(tmp_path / "missing.yaml")))
    assert "config file not found" in msg


def test_corrupted_run_directory_names_the_file(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / "state.json").write_text("{ not json")
    msg = one_line_error(cli("resume", str(broken)))
    assert "state.json" in msg and "corrupted" in msg
    shutil.rmtree(broken)
    shutil.copytree(finished_run, broken)
    state = json.loads((broken / "state.json").read_text())
    state["phase"] = "search"
    state["generations_done"] = 23  # forces a redo of the last generation from archived parents
    (broken / "state.json").write_text(json.dumps(state))
    victim = state["archives"][0]["elites"][0]["id"]
    (broken / "individuals" / f"{victim}.safetensors").write_bytes(b"\x00" * 10)
    msg = one_line_error(cli("resume", str(broken)), alone=False)
    assert f"{victim}.safetensors" in msg
    msg = one_line_error(cli("resume", str(tmp_path / "nowhere")))
    assert "not found" in msg


def test_progress_in_a_log_is_plain_lines_with_counts_and_eta(family: dict, tmp_path: Path) -> None:
    """stderr is a pipe here, as in a CI log or ``nohup``: live bars would print nothing until
    the end, so each phase and each generation is one plain line."""
    config = write_config(tmp_path, family, generations=6, plot_every=0)
    result = cli("run", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    generations = [x for x in lines if x.startswith("generation ")]
    assert len(generations) == 6, result.stderr
    assert " 6/6 best " in generations[-1] and "elapsed 0:" in generations[-1]
    assert any(x.startswith("evaluating experts") for x in lines), result.stderr
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log
