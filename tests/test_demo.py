"""A miniature of the demo pipeline on a tiny model: every stage, every output file.

The tiny random model scores nothing on the agent tasks; this checks the plumbing (experts
trained and cached, merges, a CycleQD run on the validation splits only, the test table, the real
benchmarks' rows, the report), not the result: ``make demo`` measures that on SmolLM2.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from cycleqd.config import dump_config, load_config
from cycleqd.demo.pipeline import Demo, DemoSettings, clean_output, language_name
from cycleqd.demo.presets import PRESETS
from cycleqd.demo.tables import constraint_text
from cycleqd.progress import PlainProgress
from cycleqd.tasks import build_task
from cycleqd.tasks.multiple_choice import load_questions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


QUESTIONS = [
    {"context": "Question: 2 + 2 =\nAnswer:", "choices": ["4", "5", "22", "0"], "answer": 0},
    {"context": "Question: The sky is\nAnswer:", "choices": ["blue", "a fish"], "answer": 0},
    {"context": "Question: Ice is\nAnswer:", "choices": ["hot", "cold", "loud"], "answer": 1},
    {"context": "Question: 3 > 2?\nAnswer:", "choices": ["no", "yes"], "answer": 1},
]


def _language_file(path: Path) -> Path:
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def test_mini_demo_end_to_end(tiny_base: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    settings = DemoSettings(
        out=tmp_path / "demo",
        preset=PRESETS["mini"],
        model=tiny_base,
        benchmark_data=SHARED if SHARED.is_dir() else tmp_path / "missing",
        experts_cache=tmp_path / "experts",
        seeds=2,
        ablation=True,
        language_data=_language_file(tmp_path / "questions.jsonl"),
    )
    log = io.StringIO()  # the demo's output going to a file: its progress comes as plain lines
    with PlainProgress(console=Console(file=log, width=200), heartbeat=0.05) as bar:
        rows = Demo(settings, say=messages.append, bar=bar).run()
    progress = log.getvalue().splitlines()
    assert any(x.startswith("train ") and x.endswith(" done") for x in progress), progress
    assert any(x.startswith("cycleqd search ") and " best " in x for x in progress), progress
    assert any(x.startswith("test evaluation ") for x in progress), progress
    names = [r["name"] for r in rows]
    assert names[0] == "base" and names[-2:] == ["CycleQD", "CycleQD (seed 1)"]
    assert {"expert: code", "expert: os", "expert: db", "fine-tune: all data"} <= set(names)
    assert any(n.startswith("merge: ") for n in names)
    out = settings.out
    # each expert is anchored to the base on the other two skills' training files; the all-data
    # fine-tune, trained on all three, has no anchors
    experts = settings.experts_cache / "mini"
    # the mini preset keeps its experts as peft adapters: every stage takes them as they are
    assert (experts / "expert-os" / "adapter_config.json").is_file()
    assert not (experts / "expert-os" / "model.safetensors").exists()
    record = json.loads((experts / "expert-os" / "training.json").read_text())
    assert record["hyperparameters"]["anchor_weight"] == 1.0
    assert sorted(Path(a["spec"]).name for a in record["anchors"]) == [
        "code-mini-train.jsonl",
        "db-mini-train.jsonl",
    ]
    all_data = json.loads((experts / "all-data" / "training.json").read_text())
    assert all_data["anchors"] == [] and "anchor_weight" not in all_data["hyperparameters"]
    table = json.loads((out / "table.json").read_text())
    assert table["tasks"] == ["code", "os", "db"]
    for row in table["test"]:
        assert set(row["scores"]) == {"code", "os", "db", "language"}
        agent = [row["scores"][t] for t in ("code", "os", "db")]
        assert row["average"] == pytest.approx(sum(agent) / 3)  # language is not averaged in
        for task, (low, high) in row["intervals"].items():  # 95% Wilson intervals
            assert 0.0 <= low <= row["scores"][task] <= high <= 1.0
        low, high = row["average_interval"]
        assert low <= row["average"] + 1e-9 and row["average"] <= high + 1e-9
    # the language column: every model on the same questions, drops from the base, CycleQD
    # paired with the best merge on those questions
    language = table["language"]
    by_name = {r["name"]: r for r in table["test"]}
    assert language["base"] == by_name["base"]["scores"]["language"]
    assert language["drop"]["CycleQD"] == pytest.approx(
        language["base"] - by_name["CycleQD"]["scores"]["language"]
    )
    assert language["best_merge"].startswith("merge: ")
    assert 0.0 <= language["cycleqd_minus_best_merge"]["mcnemar_p"] <= 1.0
    assert language["cycleqd_drop_no_larger"] == (
        language["drop"]["CycleQD"] <= language["drop"][language["best_merge"]]
    )
    lang = json.loads((out / "test" / "base" / "results.json").read_text())["tasks"]["language"]
    assert lang["samples"] == len(QUESTIONS)  # mini asks for 6: the file has 4
    # CycleQD paired with the best other model on the same test samples; the seeds' spread
    paired = table["paired"][0]
    assert paired["a"] == "CycleQD" and paired["b"] != "CycleQD"
    assert 0.0 <= paired["mcnemar_p"] <= 1.0
    assert table["seeds"]["runs"] == 2
    # the random merge is drawn with each search seed; CycleQD is paired with the seed-0 draws
    assert {"merge: DARE-TIES", "merge: DARE-TIES (seed 1)"} <= set(names)
    dare = [by_name["merge: DARE-TIES"]["average"], by_name["merge: DARE-TIES (seed 1)"]["average"]]
    spread = table["merge_seeds"]["merge: DARE-TIES"]
    assert spread["runs"] == 2 and spread["average_mean"] == pytest.approx(sum(dare) / 2)
    assert all("(seed" not in c["b"] for c in table["paired"])
    assert "merge: DARE-TIES over 2 drop seeds" in (out / "table.md").read_text()
    assert (out / "cycleqd-seed1" / "state.json").is_file()
    # seed 1's search took seed 0's seeding (the experts' validation scores), not re-scored
    assert any(m.startswith("  cycleqd-seed1: seeded (") for m in messages)
    seed1 = json.loads((out / "cycleqd-seed1" / "state.json").read_text())
    seed0 = json.loads((out / "cycleqd" / "state.json").read_text())
    assert seed1["expert_scores"] == seed0["expert_scores"]
    state = json.loads((out / "cycleqd" / "state.json").read_text())
    assert state["final"]["merge"] == "ties"  # the preset's final merge reached the search
    # the ablation: the paper's operators, each of the preset's changes alone, the preset itself
    ablation = {r["name"]: r for r in table["ablation"]}
    by_name = {r["name"]: r for r in table["test"]}
    assert list(ablation) == [
        "paper's operators",
        "paper + search.final_merge: ties",
        "paper + basis.kind: tsv",
        "preset + search.emitter: cma_me",
        "chosen preset (CycleQD)",
    ]
    cma = (out / "ablation-preset-search-emitter-cma-me" / "metrics.jsonl").read_text()
    assert '"emitter": {"emitter": 0, "index": 0}' in cma
    paper = json.loads((out / "ablation-paper-s-operators" / "state.json").read_text())
    assert paper["final"]["merge"] == "softmax" and paper["basis_kind"] == "svd"
    tsv = json.loads((out / "ablation-paper-basis-kind-tsv" / "state.json").read_text())
    assert tsv["basis_kind"] == "tsv" and tsv["final"]["merge"] == "softmax"
    # the variants that differ from a finished search only in the final stage copy its archives
    # (the mini preset itself is the paper's search with a TIES final merge)
    derived = [m.split(":")[0].strip() for m in messages if ": derived (" in m]
    assert derived == ["ablation-paper-s-operators", "ablation-paper-search-final-merge-ties"]
    paper_metrics = (out / "ablation-paper-s-operators" / "metrics.jsonl").read_text()
    assert paper_metrics == (out / "cycleqd" / "metrics.jsonl").read_text()
    for row in ablation.values():
        assert set(row["scores"]) == {"code", "os", "db"}
        assert 0.0 <= row["validation_average"] <= 1.0
    ours = {t: by_name["CycleQD"]["scores"][t] for t in ("code", "os", "db")}
    assert ablation["chosen preset (CycleQD)"]["scores"] == ours
    # the mini preset's search evaluates children in shared forward passes
    metrics = (out / "cycleqd" / "metrics.jsonl").read_text()
    assert '"evaluation": "batched(' in metrics
    assert set(table["timings_s"]) >= {"experts", "cycleqd search", "test evaluation"}
    # each stage's own peak memory (the high-water mark is reset at every stage on Linux)
    assert set(table["peak_rss_gb"]) == set(table["timings_s"])
    assert all(0 < gb < 24 for gb in table["peak_rss_gb"].values())
    assert "peak memory (GB)" in (out / "report.html").read_text()
    assert table["cycleqd"]["generations"] == PRESETS["mini"].generations
    # selection saw validation files only; the table was made on the test files
    config = (out / "cycleqd" / "config.yaml").read_text()
    assert "validation" in config and "-test." not in config
    # each search's exact config is its run directory's config.yaml, which `cycleqd run` takes
    # unchanged: it loads, and dumps back to the same text; the preset's overlay is in it
    for run in ("cycleqd", "ablation-paper-s-operators", "ablation-paper-basis-kind-tsv"):
        path = out / run / "config.yaml"
        assert dump_config(load_config(path)) == path.read_text()
    searched = load_config(out / "cycleqd" / "config.yaml")
    assert searched.search.final_merge.kind == "ties"
    assert searched.executor.children_per_batch == 2 and searched.executor.population == "on"
    results = json.loads((out / "test" / "cycleqd" / "results.json").read_text())
    for task in ("code", "os", "db"):
        assert results["tasks"][task]["samples"] == PRESETS["mini"].n_test
        assert Path(results["tasks"][task]["transcripts"]).is_file()
    md = (out / "table.md").read_text()
    assert "| CycleQD |" in md and "| base |" in md and "McNemar" in md
    assert "| average | language |" in md and "Language (questions acc_norm)" in md
    assert table["language_benchmark"] == "questions" and "questions of questions," in md
    assert "final model is" in md and ("ties merge" in md or "archived individual" in md)
    html = (out / "report.html").read_text()
    assert "Stage timings" in html and "data:image/png;base64," in html
    if SHARED.is_dir():
        assert [r["name"] for r in table["real_dev"]] == ["base", "CycleQD"]
    else:
        assert table["real_dev"] == [] and any("notice" in m for m in messages)
    # a second run reuses the trained experts (keyed by base, data and hyperparameters)
    summary = json.loads((out / "cycleqd" / "summary.json").read_text())
    clean_output(out)
    assert not (out / "table.md").exists() and not (out / "data").exists()
    messages.clear()
    again = Demo(settings, say=messages.append)
    data = again.data()
    experts = again.experts(tiny_base, data)
    again.all_data(tiny_base, data)
    assert sum("cached" in m for m in messages) == 4
    # ... and the merge baselines of the same experts, parameters and code
    ties_weights = (out / "baselines" / "ties" / "model.safetensors").stat().st_mtime_ns
    merged = again.merges(tiny_base, experts)
    assert sum("reused (same experts" in m for m in messages) == len(PRESETS["mini"].merges)
    assert (merged["ties"] / "model.safetensors").stat().st_mtime_ns == ties_weights
    (out / "baselines" / "linear.key").write_text("stale\n")
    messages.clear()
    again.merges(tiny_base, experts)
    assert [m for m in messages if "reused" in m] == [
        f"  {m}: reused (same experts, parameters and code)"
        for m in PRESETS["mini"].merges
        if m != "linear"
    ]
    messages.clear()
    # ... and the finished search of the same config, models, data and code
    _, reused = again.search(tiny_base, experts, data)
    assert any("cycleqd: reused" in m for m in messages)
    assert reused["final"] == summary["final"]
    assert not any("generation" in m for m in messages)
    # ... and an unchanged model's stored test results (same weights, data, code)
    test_files = {skill: data[skill]["test"] for skill in ("code", "os", "db")}
    report = again.evaluate("base", tiny_base, test_files, "test", language=again.language_file())
    assert report["reused"] is True and any("reused" in m for m in messages)
    _check_language_constraint(settings, tiny_base, experts, data, tmp_path)


def _check_language_constraint(
    settings: DemoSettings, base: Path, experts: dict, data: dict, tmp_path: Path
) -> None:
    """``--language-constraint``: the search scores every child on questions of the language
    file that the column does not ask (in shared passes, as the mini preset evaluates), keeps
    its floor, and the table's note says what it did."""
    many = [
        {**QUESTIONS[i % 4], "context": f"({i}) " + QUESTIONS[i % 4]["context"]} for i in range(12)
    ]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in many))
    demo = Demo(replace(settings, language_data=path, language_constraint=0.0))
    run_dir, summary = demo.search(base, experts, data)
    assert run_dir.name == "cycleqd-language"
    config = load_config(run_dir / "config.yaml")
    (constraint,) = config.constraints
    assert constraint.name == "language" and constraint.max_drop == 0.0
    column = {q.context for q in load_questions(path, limit=PRESETS["mini"].n_language, seed=0)}
    searched = build_task("language", constraint.type, constraint.params, "c").questions
    assert len(searched) == PRESETS["mini"].n_language_search
    assert not column & {q.context for q in searched}
    floor = summary["constraints"]["language"]["floor"]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(("rejected" in m) == (m["scores"]["language"] < floor) for m in lines)
    assert any(m["evaluation"].startswith("batched(") for m in lines)
    note = constraint_text(summary, PRESETS["mini"].n_language_search)
    assert f"rejected {summary['rejected']} of {PRESETS['mini'].generations} children" in note


def test_language_column_is_skipped_with_a_notice_when_its_file_is_missing(
    tmp_path: Path,
) -> None:
    messages: list[str] = []
    missing = tmp_path / "nowhere.jsonl"
    settings = DemoSettings(out=tmp_path, preset=PRESETS["mini"], language_data=missing)
    assert Demo(settings, say=messages.append).language_file() is None
    assert messages == [f"notice: {missing} not found; the language column is skipped"]
    off = DemoSettings(out=tmp_path, preset=PRESETS["mini"], language=False)
    assert Demo(off, say=messages.append).language_file() is None


def test_the_language_column_fetches_hellaswag_by_default_and_names_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a file the column fetches HellaSwag; a failed fetch is a notice, not a crash; the
    report names the file's benchmark."""
    import cycleqd.tasks.data_zoo as zoo

    fetched: list[str] = []
    path = tmp_path / "hellaswag-validation.jsonl"

    def fetch(name: str) -> Any:
        fetched.append(name)
        if len(fetched) > 1:
            raise OSError("no network")
        return SimpleNamespace(path=path)

    monkeypatch.setattr(zoo, "fetch_data", fetch)
    messages: list[str] = []
    demo = Demo(DemoSettings(out=tmp_path, preset=PRESETS["mini"]), say=messages.append)
    assert demo.language_file() == path
    assert language_name(path) == "hellaswag-validation"
    assert language_name(tmp_path / "discourse_marker_prediction.json") == (
        "discourse_marker_prediction"
    )
    assert demo.language_file() is None
    assert fetched == ["hellaswag", "hellaswag"]
    assert "hellaswag could not be fetched (no network)" in messages[0]


def test_the_language_column_scores_a_bigbench_task_as_cloze(tmp_path: Path) -> None:
    from cycleqd.demo.pipeline import _cloze

    task = tmp_path / "task.json"
    task.write_text(json.dumps({"examples": [{"input": "a", "target_scores": {"b": 1, "c": 0}}]}))
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text(json.dumps({"question": "q", "choices": ["x", "y"], "answer": 0}) + "\n")
    params = {"data": str(task), "limit": 1}
    assert _cloze(params, task) == {**params, "list_choices": False}
    assert _cloze({"data": str(mmlu)}, mmlu) == {"data": str(mmlu)}
    question = build_task("l", "multiple_choice", _cloze(params, task), "l").questions[0]
    assert question.context == "\nQ: a\nA:"
