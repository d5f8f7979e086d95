"""The multiple-choice task: log-likelihoods against a plain per-sample forward, lm-eval's
accuracies, the benchmark loaders on small fixtures, and ``cycleqd eval`` with the new type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cycleqd.errors import CycleQDError
from cycleqd.evaluate import evaluate_model, load_eval_config
from cycleqd.models.engine import HFEngine
from cycleqd.models.likelihood import loglikelihoods_on_model
from cycleqd.tasks import LanguageEngine, build_task, task_types
from cycleqd.tasks.multiple_choice import (
    choice_loglikelihoods,
    detect_format,
    load_questions,
    score_choices,
    summarise,
)


@pytest.fixture(scope="module")
def engine(family: dict) -> HFEngine:
    return HFEngine(family["base"], device="cpu", dtype="float32", batch_size=3)


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------
# Log-likelihoods
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def _reference(engine: HFEngine, context: str, continuation: str) -> float:
    """One unpadded forward per pair, tokenised by lm-eval's rules written out by hand."""
    tok, model = engine.tokenizer, engine.model
    if context == "":
        ctx = [tok.bos_token_id]
        cont = tok(continuation, add_special_tokens=False)["input_ids"]
    else:
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        ctx = tok(stripped)["input_ids"]
        cont = tok(stripped + continuation)["input_ids"][len(ctx) :]
    limit = model.config.max_position_embeddings
    seq = (ctx + cont)[-(limit + 1) :]
    logits = model(input_ids=torch.tensor([seq[:-1]])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    total = 0.0
    for j, token in enumerate(cont):
        position = len(seq) - 1 - len(cont) + j  # the logit that predicts cont[j]
        total += float(logprobs[position, token])
    return total


PAIRS = [
    # one question's choices (shared context: the two-pass path), of different lengths
    ("Question: which is red?\nAnswer:", " a tomato"),
    ("Question: which is red?\nAnswer:", " the sky"),
    ("Question: which is red?\nAnswer:", " grass on a sunny afternoon"),
    ("Question: which is red?\nAnswer:", " x"),
    # trailing whitespace moves to the continuation
    ("copy ab=", "ab"),
    ("copy ab= ", "ab"),
    # an empty context is the BOS token
    ("", "hello"),
    # longer than the model's 128 positions: truncated on the left
    ("lorem ipsum dolor sit amet " * 8, " consectetur"),
    # a context on its own
    ("1+2=", "3"),
]


def test_loglikelihoods_match_a_plain_forward_per_pair(engine: HFEngine) -> None:
    contexts, continuations = zip(*PAIRS, strict=True)
    got = choice_loglikelihoods(engine, list(contexts), list(continuations))
    want = [_reference(engine, c, x) for c, x in PAIRS]
    assert got == pytest.approx(want, abs=1e-4)
    # the plain path (no shared context) agrees too, whatever the batch size
    plain = loglikelihoods_on_model(
        engine.model,
        engine.tokenizer,
        engine.device,
        2,
        list(contexts),
        list(continuations),
        share=False,
    )
    assert plain == pytest.approx(want, abs=1e-4)
    assert all(v < 0 for v in got)


def test_trailing_space_is_scored_with_the_continuation(engine: HFEngine) -> None:
    a, b = choice_loglikelihoods(engine, ["copy ab= ", "copy ab="], ["ab", " ab"])
    assert a == pytest.approx(b, abs=1e-5)


class _LoglikelihoodEngine(HFEngine):
    """An engine with its own ``loglikelihood``: the task asks the engine, whatever it is."""

    calls: int = 0

    def loglikelihood(
        self, contexts: list[str], continuations: list[str], groups: list[int] | None = None
    ) -> list[float]:
        self.calls += 1
        values = loglikelihoods_on_model(
            self.model, self.tokenizer, self.device, 1, contexts, continuations
        )
        return [v - 1.0 for v in values]


def test_an_engine_loglikelihood_method_is_used(family: dict, engine: HFEngine) -> None:
    own = _LoglikelihoodEngine(family["base"], device="cpu", dtype="float32", batch_size=3)
    assert isinstance(engine, LanguageEngine) and isinstance(own, LanguageEngine)
    pairs = PAIRS[:4]
    got = choice_loglikelihoods(own, [c for c, _ in pairs], [x for _, x in pairs])
    assert own.calls == 1
    direct = choice_loglikelihoods(engine, [c for c, _ in pairs], [x for _, x in pairs])
    assert got == pytest.approx([v - 1.0 for v in direct], abs=1e-4)


# ------------------------------------------------------------------------------------------
# Accuracies
# ------------------------------------------------------------------------------------------


def test_acc_and_acc_norm_differ_on_a_constructed_question() -> None:
    choices = ["no", "a much longer answer", "ééé"]
    # summed: "no" wins; per character: the long answer (-6/20) beats -2/2 and -4.5/3;
    # per byte: "ééé" is 6 bytes, -4.5/6 = -0.75 > -1 but < -0.3, so the long answer again
    lls = [-2.0, -6.0, -4.5]
    s = score_choices(lls, choices, gold=1)
    assert (s["pred"], s["pred_norm"], s["pred_bytes"]) == (0, 1, 1)
    assert (s["acc"], s["acc_norm"], s["acc_bytes"]) == (0.0, 1.0, 1.0)
    # characters and bytes disagree on non-ASCII text: -1.2 is -0.4 a character, -0.2 a byte
    t = score_choices([-1.2, -6.0], ["ééé", "a much longer answer"], gold=0)
    assert (t["pred_norm"], t["pred_bytes"]) == (1, 0)
    # ties go to the first choice, as numpy.argmax
    assert score_choices([-1.0, -1.0], ["a", "b"], gold=1)["acc"] == 0.0
    assert summarise([s, t]) == {"n": 2, "acc": 0.5, "acc_norm": 0.5, "acc_bytes": 1.0}


def test_the_metric_param_picks_the_quality(tmp_path: Path, engine: HFEngine) -> None:
    short, long = "x", "the cat sat on the mat and then it sat on the hat"
    context = "Question: what?\nAnswer:"
    lls = choice_loglikelihoods(engine, [context, context], [" " + short, " " + long])
    scored = score_choices(lls, [short, long], gold=1)
    # the tiny model spreads probability evenly, so the long answer loses in sum, wins per char
    assert (scored["pred"], scored["pred_norm"]) == (0, 1)
    data = _write_jsonl(
        tmp_path / "q.jsonl", [{"context": context, "choices": [short, long], "answer": 1}]
    )
    quality = {}
    for metric in ("acc", "acc_norm"):
        task = build_task("mc", "multiple_choice", {"data": str(data), "metric": metric}, "t")
        result = task.evaluate(engine)
        quality[metric] = result.quality
        record = result.records[0]
        assert record["loglikelihoods"] == pytest.approx(lls, abs=1e-5)
        assert record["score"] == record[metric]
    assert quality == {"acc": 0.0, "acc_norm": 1.0}


# ------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------

ARC_AI2 = {
    "id": "Mercury_7175875",
    "question": {
        "stem": "An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?",
        "choices": [
            {"text": "Planetary density will decrease.", "label": "A"},
            {"text": "Planetary years will become longer.", "label": "B"},
            {"text": "Planetary days will become shorter.", "label": "C"},
            {"text": "Planetary gravity will become stronger.", "label": "D"},
        ],
    },
    "answerKey": "C",
}
ARC_HF = {
    "id": "MCAS_2000_4_6",
    "question": "Which technology was developed most recently?",
    "choices": {
        "text": ["cellular telephone", "television", "refrigerator", "airplane"],
        "label": ["1", "2", "3", "4"],
    },
    "answerKey": "1",
}
HELLASWAG = {
    "ind": 24,
    "activity_label": "Roof shingle removal",
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "ctx": "A man is sitting on a roof. he",
    "endings": [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ],
    "source_id": "activitynet~v_-JhWjGDPHMY",
    "split": "val",
    "split_type": "indomain",
    "label": 3,
}
HELLASWAG_WIKIHOW = {
    "ind": 4,
    "activity_label": "Home and Garden",
    "ctx_a": "[header] How to clean a grill [title] Heat the grill.",
    "ctx_b": "",
    "endings": ["[step] Scrub it.  Then rinse.", "Paint it.", "Sell it.", "Eat it."],
    "label": "0",
}
PIQA = {"goal": "How do I ready a guinea pig cage for it's new occupants?", "sol1": "Provide "
        "the guinea pig with a cage full of a few inches of bedding made of ripped paper "
        "strips.", "sol2": "Provide the guinea pig with a cage full of a few inches of "
        "bedding made of ripped jeans material."}  # fmt: skip


def test_arc_both_layouts(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [ARC_AI2, ARC_HF])
    assert detect_format(path) == "arc"
    a, b = load_questions(path)
    assert a.context == f"Question: {ARC_AI2['question']['stem']}\nAnswer:"
    assert a.choices[2] == "Planetary days will become shorter." and a.gold == 2
    assert a.id == "Mercury_7175875"
    assert b.choices == ("cellular telephone", "television", "refrigerator", "airplane")
    assert b.gold == 0


def test_hellaswag_follows_lm_eval_preprocessing(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "hellaswag_val.jsonl", [HELLASWAG, HELLASWAG_WIKIHOW])
    assert detect_format(path) == "hellaswag"
    a, b = load_questions(path)
    assert a.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert a.choices[3] == "starts pulling up roofing on a roof." and a.gold == 3
    # WikiHow artefacts: " [title]" -> ". ", other brackets dropped, double spaces halved
    assert b.context == "Home and Garden: How to clean a grill. Heat the grill."
    # lm-eval strips before it drops brackets, so a leading "[step]" leaves a space; kept as is
    assert b.choices[0] == " Scrub it. Then rinse." and b.gold == 0


def test_piqa_with_label_field_and_with_the_release_labels_file(tmp_path: Path) -> None:
    hf = _write_jsonl(tmp_path / "piqa-hf.jsonl", [{**PIQA, "label": 0}])
    (q,) = load_questions(hf)
    assert q.context == f"Question: {PIQA['goal']}\nAnswer:"
    assert q.choices == (PIQA["sol1"], PIQA["sol2"]) and q.gold == 0
    release = _write_jsonl(tmp_path / "valid.jsonl", [PIQA, {**PIQA, "goal": "g2"}])
    (tmp_path / "valid-labels.lst").write_text("1\n0\n")
    assert detect_format(release) == "piqa"
    assert [q.gold for q in load_questions(release)] == [1, 0]
    (tmp_path / "valid-labels.lst").write_text("1\n")
    with pytest.raises(CycleQDError, match=r"valid\.jsonl:2: .*only 1 labels"):
        load_questions(release)
    (tmp_path / "valid-labels.lst").write_text("1\n2\n")
    with pytest.raises(CycleQDError, match=r"valid-labels\.lst:2: PIQA label '2'"):
        load_questions(release)


def test_mmlu_csv_and_jsonl_in_both_prompt_styles(tmp_path: Path) -> None:
    csv_path = tmp_path / "high_school_physics_test.csv"
    csv_path.write_text(
        '"What is 2, plus 2?",3,4,5,"six\nor seven",B\n'
        "Which is a vector?,speed,mass,velocity,energy,C\n"
    )
    assert detect_format(csv_path) == "mmlu"
    a, b = load_questions(csv_path, mmlu_style="letters")
    assert a.context == (
        "The following are multiple choice questions (with answers) about high school physics."
        "\n\nWhat is 2, plus 2?\nA. 3\nB. 4\nC. 5\nD. six\nor seven\nAnswer:"
    )
    assert a.choices == ("A", "B", "C", "D") and a.gold == 1 and a.subject == "high_school_physics"
    assert b.id == f"{csv_path.name}:3" and b.gold == 2  # line numbers count the quoted newline
    (cloze, _) = load_questions(csv_path)
    assert cloze.context == (
        "The following are questions about high school physics.\nQuestion: What is 2, plus 2?"
        "\nAnswer:"
    )
    assert cloze.choices == ("3", "4", "5", "six\nor seven")
    jsonl = _write_jsonl(
        tmp_path / "mmlu.jsonl",
        [
            {"question": "Q?", "subject": "virology", "choices": ["a", "b", "c", "d"], "answer": 2},
            {
                "question": "R?",
                "subject": "virology",
                "choices": ["a", "b", "c", "d"],
                "answer": "D",
            },
        ],
    )
    assert detect_format(jsonl) == "mmlu"
    assert [q.gold for q in load_questions(jsonl)] == [2, 3]


def test_generic_format_and_unicode_line_separators(tmp_path: Path) -> None:
    # U+2028 inside a JSON string is valid JSON and must not split the record
    raw = json.dumps(
        {"context": "a\u2028b", "choices": ["x", "y"], "answer": 1}, ensure_ascii=False
    )
    path = _write_jsonl(
        tmp_path / "g.jsonl", [raw, {"context": "c", "choices": ["z"], "answer": 0}]
    )
    assert detect_format(path) == "generic"
    first, second = load_questions(path)
    assert first.context == "a\u2028b" and first.gold == 1 and second.id == "g.jsonl:2"


@pytest.mark.parametrize(
    ("name", "rows", "fmt", "line", "why"),
    [
        ("arc.jsonl", [ARC_AI2, {**ARC_AI2, "answerKey": "E"}], "auto", 2, "answerKey 'E'"),
        ("arc.jsonl", [ARC_HF, "{not json"], "auto", 2, "not valid JSON"),
        ("hs.jsonl", [HELLASWAG, {**HELLASWAG, "label": ""}], "auto", 2, "label ''"),
        ("hs.jsonl", [HELLASWAG, {**HELLASWAG, "endings": "x"}], "auto", 2, "endings must"),
        ("piqa.jsonl", [{**PIQA, "label": 0}, {**PIQA, "label": 0}, PIQA], "auto", 3, "no label"),
        ("m.jsonl", [{"question": "q", "choices": ["a"], "answer": 3}], "mmlu", 1, "answer 3"),
        ("g.jsonl", [{"context": "c", "choices": [], "answer": 0}], "generic", 1, "'choices'"),
        ("g.jsonl", [{"context": "c", "choices": ["a"], "answer": 0}, [1]], "generic", 2, "object"),
        ("u.jsonl", [{"prompt": "p"}], "auto", 1, "cannot tell the multiple-choice format"),
    ],
)
def test_malformed_lines_are_named_by_file_and_line(
    tmp_path: Path, name: str, rows: list[Any], fmt: str, line: int, why: str
) -> None:
    path = _write_jsonl(tmp_path / name, rows)
    with pytest.raises(CycleQDError) as err:
        load_questions(path, fmt)
    assert f"{path}:{line}: " in str(err.value) and why in str(err.value)


def test_malformed_mmlu_csv_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "anatomy_dev.csv"
    path.write_text("q1,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(CycleQDError, match=rf"{path}:2: mmlu record: answer 'E'"):
        load_questions(path)
    path.write_text("q1,a,b,c,d,A\n\nq3,a\n")
    with pytest.raises(CycleQDError, match=rf"{path}:3: mmlu record: expected"):
        load_questions(path)
    with pytest.raises(CycleQDError, match="data file not found"):
        load_questions(tmp_path / "missing.jsonl")


def test_limit_samples_across_the_file_with_a_seed(tmp_path: Path) -> None:
    rows = [{"context": f"c{i}", "choices": ["a", "b"], "answer": 0} for i in range(50)]
    path = _write_jsonl(tmp_path / "g.jsonl", rows)
    first = load_questions(path, limit=5, seed=None)
    assert [q.context for q in first] == ["c0", "c1", "c2", "c3", "c4"]
    sample = load_questions(path, limit=5, seed=0)
    assert sample == load_questions(path, limit=5, seed=0)  # stable across models and runs
    assert sample != first and len(sample) == 5
    ids = [int(q.context[1:]) for q in sample]
    assert ids == sorted(ids)  # file order kept


def test_exclude_leaves_out_another_sample_of_the_same_file(tmp_path: Path) -> None:
    rows = [{"context": f"c{i}", "choices": ["a", "b"], "answer": 0} for i in range(50)]
    path = _write_jsonl(tmp_path / "g.jsonl", rows)
    test = {q.context for q in load_questions(path, limit=20, seed=0)}
    search = load_questions(path, limit=10, seed=1, exclude=(20, 0))
    assert len(search) == 10 and not test & {q.context for q in search}
    rest = load_questions(path, exclude=(20, 0))
    assert {q.context for q in rest} == {f"c{i}" for i in range(50)} - test
    task = build_task(
        "lang",
        "multiple_choice",
        {"data": str(path), "limit": 10, "seed": 1, "exclude": {"limit": 20, "seed": 0}},
        "constraints.0",
    )
    assert [q.context for q in task.questions] == [q.context for q in search]
    with pytest.raises(CycleQDError, match="no questions left"):
        load_questions(path, exclude=(50, 0))


# ------------------------------------------------------------------------------------------
# The task type and `cycleqd eval`
# ------------------------------------------------------------------------------------------


def test_task_is_registered_and_params_are_checked(tmp_path: Path) -> None:
    assert "multiple_choice" in task_types()
    path = _write_jsonl(tmp_path / "a.jsonl", [ARC_AI2])
    with pytest.raises(CycleQDError, match=r"tasks\.0\.params\.metric"):
        build_task("mc", "multiple_choice", {"data": str(path), "metric": "f1"}, "tasks.0")


def test_cycleqd_eval_runs_the_multiple_choice_type(tmp_path: Path, family: dict) -> None:
    data = _write_jsonl(tmp_path / "arc.jsonl", [ARC_AI2, ARC_HF, {**ARC_HF, "id": "third"}])
    config = load_eval_config(None, [f"multiple_choice:{data}"], limit=2)
    report = evaluate_model(family["base"], config, tmp_path / "results.json")
    result = report["tasks"]["multiple_choice"]
    assert result["samples"] == 2 and 0.0 <= result["quality"] <= 1.0
    records = [json.loads(line) for line in Path(result["transcripts"]).read_text().splitlines()]
    assert all(len(r["loglikelihoods"]) == len(r["choices"]) == 4 for r in records)
    assert result["quality"] == pytest.approx(sum(r["acc_norm"] for r in records) / 2)


BIGBENCH = {
    "name": "discourse_marker_prediction",
    "example_input_prefix": "\n",
    "example_output_prefix": " ",
    "examples": [
        {"input": "It rained.", "target_scores": {"However, it was dry.": 0, "So, it was wet.": 1}},
        {"input": "He ran.", "target_scores": {"Thus he won": 1, "Yet he won": 0, "Or": 0}},
    ],
}


def test_bigbench_task_prompt_as_bigbench_composes_it(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps(BIGBENCH))
    assert detect_format(path) == "bigbench"
    first, second = load_questions(path)
    # BIG-bench's defaults fill what the task leaves out: choices appended after "\n  choice: "
    assert (
        first.context == "\nIt rained.\n  choice: However, it was dry.\n  choice: So, it was wet."
    )
    assert first.choices == ("However, it was dry.", "So, it was wet.") and first.gold == 1
    assert second.gold == 0 and second.id == "task.json:1"
    cloze = load_questions(path, list_choices=False)[0]
    assert cloze.context == "\nIt rained." and cloze.choices == first.choices
    plain = {**BIGBENCH, "append_choices_to_input": False, "task_prefix": "Join:"}
    del plain["example_input_prefix"], plain["example_output_prefix"]
    path.write_text(json.dumps(plain))
    assert load_questions(path)[0].context == "Join:\nQ: It rained.\nA:"


@pytest.mark.parametrize(
    ("example", "why"),
    [
        ({"input": "x", "target_scores": {"a": 1, "b": 1}}, "2 choices share the top score 1"),
        ({"input": "x", "target_scores": {}}, "numeric 'target_scores'"),
        ({"input": 3, "target_scores": {"a": 1}}, "a string 'input'"),
    ],
)
def test_malformed_bigbench_examples_are_named(tmp_path: Path, example: dict, why: str) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"examples": [BIGBENCH["examples"][0], example]}))
    with pytest.raises(CycleQDError) as err:
        load_questions(path)
    assert f"{path}: examples[1]: " in str(err.value) and why in str(err.value)
    path.write_text(json.dumps({"tasks": []}))
    with pytest.raises(CycleQDError, match="needs an 'examples' list"):
        load_questions(path)
