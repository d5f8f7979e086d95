"""Multiple-choice benchmarks scored by log-likelihood, in lm-evaluation-harness's convention.

General language ability is what a merge of agent experts can lose without any agent task
noticing, so it is measured the way published numbers for base models are: for every question,
each choice is scored by the summed log-likelihood of ``target_delimiter + choice`` given the
question's context, and the question counts as right when the gold choice scores highest.

* ``acc``: argmax of the summed log-likelihood;
* ``acc_norm``: argmax of the log-likelihood divided by the choice's length in characters (longer
  choices collect more negative log-probability; lm-eval's ``acc_norm`` divides by
  ``len(choice)``, the delimiter not counted);
* ``acc_bytes``: the same with the choice's UTF-8 length (lm-eval's ``acc_bytes``).

Tokenisation follows lm-eval's ``HFLM``: trailing whitespace of the context moves to the
continuation, ``context + continuation`` is encoded whole and split at the context's token count
(so a sub-word tokenizer sees the same boundary a reader does), the tokenizer adds its special
tokens as it does by default, an empty context becomes the BOS (else EOS) token, and too-long
inputs lose tokens on the left. Prompts are those of lm-eval's task configs (ARC, HellaSwag, PIQA;
MMLU with ``mmlu_style: letters``), zero-shot; MMLU's default ``cloze`` style scores the option
texts instead (see :func:`_mmlu_question`).

Data files are the public formats users have: ARC JSON Lines (AI2's release and the Hugging Face
layout), HellaSwag JSON Lines, PIQA JSON Lines (with the release's separate ``-labels.lst`` file
or a ``label`` field), MMLU CSV (the original per-subject files) and MMLU JSON Lines (the
Hugging Face ``cais/mmlu`` layout, which ``cycleqd data fetch mmlu`` writes), BIG-bench's JSON
task files (``task.json`` with ``examples`` and ``target_scores``; ``cycleqd data fetch
bigbench-discourse`` fetches one), plus a generic ``{"context", "choices", "answer"}`` layout for
anything else.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cycleqd.errors import CycleQDError
from cycleqd.tasks.base import LanguageEngine, TaskResult, register_task
from cycleqd.tasks.files import iter_jsonl, read_text, require_file

__all__ = [
    "FORMATS",
    "MultipleChoiceParams",
    "MultipleChoiceTask",
    "Question",
    "choice_loglikelihoods",
    "detect_format",
    "load_questions",
    "score_choices",
    "summarise",
]

Format = Literal["arc", "hellaswag", "piqa", "mmlu", "bigbench", "generic"]
FORMATS: tuple[str, ...] = ("arc", "hellaswag", "piqa", "mmlu", "bigbench", "generic")
Metric = Literal["acc_norm", "acc", "acc_bytes"]
MmluStyle = Literal["cloze", "letters"]


@dataclass(frozen=True)
class Question:
    """One question: the context the model reads, the choices it scores, the gold index.

    ``choices`` are the bare choice texts; the scored continuation is
    ``target_delimiter + choice`` and ``acc_norm`` divides by ``len(choice)``, as in lm-eval.
    """

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int
    subject: str | None = None


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first on ties (as ``numpy.argmax``)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def score_choices(lls: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, Any]:
    """Predictions and 0/1 scores of one question from its choices' log-likelihoods.

    An empty choice is divided by 1 instead of 0 so that it cannot win by a division by zero.
    """
    if len(lls) != len(choices):
        raise ValueError(f"{len(lls)} log-likelihoods for {len(choices)} choices")
    pred = _argmax(lls)
    pred_norm = _argmax([ll / max(len(c), 1) for ll, c in zip(lls, choices, strict=True)])
    pred_bytes = _argmax(
        [ll / max(len(c.encode("utf-8")), 1) for ll, c in zip(lls, choices, strict=True)]
    )
    return {
        "pred": pred,
        "pred_norm": pred_norm,
        "pred_bytes": pred_bytes,
        "acc": float(pred == gold),
        "acc_norm": float(pred_norm == gold),
        "acc_bytes": float(pred_bytes == gold),
    }


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """Mean ``acc``, ``acc_norm`` and ``acc_bytes`` over a task's records, and their count.

    The task's quality is one of them (``metric``); reports that want the others read them here.
    """
    n = len(records)
    if n == 0:
        return {"n": 0, "acc": 0.0, "acc_norm": 0.0, "acc_bytes": 0.0}
    return {
        "n": n,
        **{k: sum(float(r[k]) for r in records) / n for k in ("acc", "acc_norm", "acc_bytes")},
    }


# --------------------------------------------------------------------------------------------
# Log-likelihoods
# --------------------------------------------------------------------------------------------


def choice_loglikelihoods(
    engine: LanguageEngine, contexts: Sequence[str], continuations: Sequence[str]
) -> list[float]:
    """``log p(continuation | context)`` summed over the continuation's tokens, per pair.

    The engine scores them (:meth:`LanguageEngine.loglikelihood`); a population engine puts
    the pairs of several children into shared passes itself.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    if not contexts:
        return []
    return [float(x) for x in engine.loglikelihood(list(contexts), list(continuations))]


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

_LETTERS = "ABCDEFGHIJ"


def _bad(path: Path, lineno: int, fmt: str, why: str) -> CycleQDError:
    return CycleQDError(f"{path}:{lineno}: {fmt} record: {why}")


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _index(value: Any, n: int, *, letters: bool = True) -> int | None:
    """An answer given as an index (int or digit string) or a letter, if it names a choice."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        k = value
    elif isinstance(value, str) and value.strip().isdigit():
        k = int(value.strip())
    elif letters and isinstance(value, str) and len(value.strip()) == 1:
        k = _LETTERS.find(value.strip())
    else:
        return None
    return k if 0 <= k < n else None


def _arc(path: Path, lineno: int, item: dict[str, Any]) -> Question:
    """AI2's release (``question.stem``, ``question.choices[]``) or the HF ``ai2_arc`` layout.

    lm-eval's ``arc_easy``/``arc_challenge``: ``Question: {question}\\nAnswer:``, the choice
    texts, gold = the index of ``answerKey`` among the labels (letters or digits).
    """
    question = item.get("question")
    if isinstance(question, dict):
        stem, raw = question.get("stem"), question.get("choices")
        if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
            raise _bad(path, lineno, "arc", "question.choices must be a list of {text, label}")
        texts = [c.get("text") for c in raw]
        labels = [c.get("label") for c in raw]
    else:
        stem, raw = question, item.get("choices")
        if not isinstance(raw, dict):
            raise _bad(path, lineno, "arc", "choices must be {text: [...], label: [...]}")
        texts, labels = raw.get("text"), raw.get("label")
    if not isinstance(stem, str):
        raise _bad(path, lineno, "arc", "no question text")
    texts, labels = _str_list(texts), _str_list(labels)
    if texts is None or labels is None or len(texts) != len(labels):
        raise _bad(path, lineno, "arc", "choices need as many string texts as labels")
    key = item.get("answerKey")
    if not isinstance(key, str) or key.strip() not in labels:
        raise _bad(path, lineno, "arc", f"answerKey {key!r} is not one of the labels {labels}")
    return Question(
        id=str(item.get("id", f"{path.name}:{lineno}")),
        context=f"Question: {stem}\nAnswer:",
        choices=tuple(texts),
        gold=labels.index(key.strip()),
    )


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: WikiHow's bracket artefacts out, spaces tidied."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(path: Path, lineno: int, item: dict[str, Any]) -> Question:
    """Rowan Zellers' release or the HF ``Rowan/hellaswag`` layout (label as a string).

    lm-eval's ``hellaswag``: ``{activity_label}: {ctx_a} {Ctx_b}`` cleaned, the cleaned endings.
    """
    fields = ("activity_label", "ctx_a", "ctx_b")
    if not all(isinstance(item.get(k), str) for k in fields):
        raise _bad(path, lineno, "hellaswag", "expected string fields " + ", ".join(fields))
    endings = _str_list(item.get("endings"))
    if endings is None:
        raise _bad(path, lineno, "hellaswag", "endings must be a list of strings")
    gold = _index(item.get("label"), len(endings), letters=False)
    if gold is None:
        raise _bad(
            path, lineno, "hellaswag", f"label {item.get('label')!r} is not an ending's index"
        )
    ctx = item["ctx_a"] + " " + item["ctx_b"].capitalize()
    return Question(
        id=str(item.get("ind", f"{path.name}:{lineno}")),
        context=_hellaswag_clean(item["activity_label"] + ": " + ctx),
        choices=tuple(_hellaswag_clean(e) for e in endings),
        gold=gold,
    )


def _piqa_labels(path: Path) -> list[tuple[int, str]] | None:
    """The release's ``<split>-labels.lst`` beside ``<split>.jsonl``: one 0/1 per line."""
    labels_path = path.with_name(path.name.removesuffix(".jsonl") + "-labels.lst")
    if not labels_path.is_file():
        return None
    text = read_text(labels_path, "PIQA labels")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _piqa(
    path: Path, lineno: int, item: dict[str, Any], label: tuple[Path, int, str] | None
) -> Question:
    """PIQA: ``Question: {goal}\\nAnswer:``, choices ``sol1``/``sol2`` (lm-eval's ``piqa``)."""
    if not all(isinstance(item.get(k), str) for k in ("goal", "sol1", "sol2")):
        raise _bad(path, lineno, "piqa", "expected string fields goal, sol1, sol2")
    if "label" in item:
        gold = _index(item["label"], 2, letters=False)
        if gold is None:
            raise _bad(path, lineno, "piqa", f"label {item['label']!r} is not 0 or 1")
    elif label is not None:
        labels_path, label_line, value = label
        gold = _index(value, 2, letters=False)
        if gold is None:
            raise CycleQDError(f"{labels_path}:{label_line}: PIQA label {value!r} is not 0 or 1")
    else:
        raise _bad(
            path, lineno, "piqa", "no label (neither a 'label' field nor a -labels.lst file)"
        )
    return Question(
        id=str(item.get("id", f"{path.name}:{lineno}")),
        context=f"Question: {item['goal']}\nAnswer:",
        choices=(item["sol1"], item["sol2"]),
        gold=gold,
    )


def _mmlu_question(
    qid: str, subject: str | None, question: str, choices: list[str], gold: int, style: MmluStyle
) -> Question:
    """MMLU in one of two public zero-shot forms.

    ``letters`` is lm-eval's ``mmlu``: the subject description, the question with lettered
    options, and the letters as choices (small models sit at chance on it: they cannot yet map a
    letter to an option). ``cloze`` scores the option texts themselves after
    ``The following are questions about {subject}.\\nQuestion: ...\\nAnswer:`` (lighteval's
    ``mmlu_cloze_prompt``, the form SmolLM2's reports use), which separates small models.
    """
    topic = (subject or "").replace("_", " ")
    if style == "letters":
        letters = _LETTERS[: len(choices)]
        head = f"The following are multiple choice questions (with answers) about {topic}.\n\n"
        body = "".join(f"\n{letter}. {c}" for letter, c in zip(letters, choices, strict=True))
        return Question(
            qid, head + question.strip() + body + "\nAnswer:", tuple(letters), gold, subject
        )
    head = f"The following are questions about {topic}.\n" if topic else ""
    return Question(qid, f"{head}Question: {question}\nAnswer:", tuple(choices), gold, subject)


def _mmlu_json(path: Path, lineno: int, item: dict[str, Any], style: MmluStyle) -> Question:
    """The HF ``cais/mmlu`` layout: ``question``, ``subject``, ``choices``, ``answer``."""
    choices = _str_list(item.get("choices"))
    if not isinstance(item.get("question"), str) or choices is None:
        raise _bad(path, lineno, "mmlu", "expected a string 'question' and a list 'choices'")
    gold = _index(item.get("answer"), len(choices))
    if gold is None:
        raise _bad(path, lineno, "mmlu", f"answer {item.get('answer')!r} names no choice")
    subject = item.get("subject")
    return _mmlu_question(
        str(item.get("id", f"{path.name}:{lineno}")),
        subject if isinstance(subject, str) and subject else None,
        item["question"],
        choices,
        gold,
        style,
    )


def _mmlu_csv(path: Path, style: MmluStyle) -> Iterator[Question]:
    """The original per-subject CSV files: ``question,A,B,C,D,answer`` rows, no header.

    The subject comes from the file name (``abstract_algebra_test.csv``).
    """
    subject = re.sub(r"_(test|val|dev|train)$", "", path.name.removesuffix(".csv")) or None
    stream = io.StringIO(read_text(path, "MMLU CSV"), newline="")
    reader = csv.reader(stream)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _bad(path, start, "mmlu", f"not valid CSV ({exc})") from exc
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 4:
            raise _bad(path, start, "mmlu", f"expected question, choices, answer; got {row!r}")
        question, choices, answer = row[0], row[1:-1], row[-1]
        gold = _index(answer, len(choices)) if not answer.strip().isdigit() else None
        if gold is None:
            raise _bad(path, start, "mmlu", f"answer {answer!r} is not a choice letter")
        yield _mmlu_question(f"{path.name}:{start}", subject, question, choices, gold, style)


def _generic(path: Path, lineno: int, item: dict[str, Any]) -> Question:
    """``{"context": str, "choices": [str], "answer": int, "id"?: str}``, scored as given."""
    choices = _str_list(item.get("choices"))
    if not isinstance(item.get("context"), str) or choices is None:
        raise _bad(path, lineno, "generic", "expected a string 'context' and a list 'choices'")
    gold = _index(item.get("answer"), len(choices))
    if gold is None:
        raise _bad(path, lineno, "generic", f"answer {item.get('answer')!r} names no choice")
    subject = item.get("subject")
    return Question(
        str(item.get("id", f"{path.name}:{lineno}")),
        item["context"],
        tuple(choices),
        gold,
        subject if isinstance(subject, str) else None,
    )


# BIG-bench's defaults for a JSON task's prompt (``bigbench/api/json_task.py``)
_BIGBENCH_DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
}


def _bigbench(path: Path, list_choices: bool | None = None) -> Iterator[Question]:
    """A BIG-bench JSON task: ``{"examples": [{"input", "target_scores": {choice: score}}]}``.

    The context is composed as BIG-bench composes a zero-shot prompt: the task prefix, the input
    prefix, the input, the choices when ``append_choices_to_input`` (the default) says so, and
    the output prefix, whose trailing spaces become the target delimiter (lm-eval's
    convention). ``list_choices`` overrides the file's ``append_choices_to_input``: ``False``
    scores the choices as cloze continuations, as lm-eval's ARC or HellaSwag prompts do, on
    contexts that a question's ten listed choices would make about five times longer. The gold
    choice is the one with the highest score; an example whose top score several choices share
    has no single gold and is an error naming it.
    """
    try:
        task = json.loads(read_text(path, "BIG-bench"))
    except ValueError as exc:
        raise CycleQDError(f"{path}: not valid JSON ({exc})") from exc
    examples = task.get("examples") if isinstance(task, dict) else None
    if not isinstance(examples, list):
        raise CycleQDError(f"{path}: a BIG-bench task needs an 'examples' list")
    opts = {k: v if task.get(k) is None else task[k] for k, v in _BIGBENCH_DEFAULTS.items()}
    if list_choices is not None:
        opts["append_choices_to_input"] = list_choices
    for i, item in enumerate(examples):
        where = f"{path}: examples[{i}]"
        item = item if isinstance(item, dict) else {}
        text, scores = item.get("input"), item.get("target_scores")
        if (
            not isinstance(text, str)
            or not isinstance(scores, dict)
            or not scores
            or not all(isinstance(v, int | float) for v in scores.values())
        ):
            raise CycleQDError(f"{where}: expected a string 'input' and numeric 'target_scores'")
        choices = [str(c).strip() for c in scores]
        values = list(scores.values())
        top = max(values)
        if values.count(top) != 1:
            raise CycleQDError(f"{where}: {values.count(top)} choices share the top score {top}")
        if opts["append_choices_to_input"]:
            text += opts["choice_prefix"] + opts["choice_prefix"].join(choices)
        context = opts["task_prefix"] + opts["example_input_prefix"] + text
        yield Question(
            str(item.get("idx", f"{path.name}:{i}")),
            (context + opts["example_output_prefix"]).rstrip(" "),
            tuple(choices),
            values.index(top),
        )


def _format_of(item: Any) -> str | None:
    """The format a parsed record looks like, from its keys; ``None`` when none fits."""
    if not isinstance(item, dict):
        return None
    keys = set(item)
    if {"ctx_a", "endings"} <= keys:
        return "hellaswag"
    if {"goal", "sol1", "sol2"} <= keys:
        return "piqa"
    if {"question", "answerKey"} <= keys:
        return "arc"
    if {"question", "choices", "answer"} <= keys:
        return "mmlu"
    if {"context", "choices", "answer"} <= keys:
        return "generic"
    return None


def detect_format(path: Path) -> str:
    """The format of a data file: MMLU for ``.csv``, BIG-bench for ``.json``, else from the first
    JSON Lines record's keys."""
    path = Path(path)
    require_file(path, "multiple-choice")
    if path.name.removesuffix(".gz").endswith(".csv"):
        return "mmlu"
    if path.name.removesuffix(".gz").endswith(".json"):
        return "bigbench"
    for lineno, item in iter_jsonl(path, "multiple-choice"):
        fmt = _format_of(item)
        if fmt is None:
            keys = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise CycleQDError(
                f"{path}:{lineno}: cannot tell the multiple-choice format from {keys}; "
                f"set params.format to one of {', '.join(FORMATS)}"
            )
        return fmt
    raise CycleQDError(f"{path}: no questions")


def _questions(
    path: Path, fmt: str, mmlu_style: MmluStyle, list_choices: bool | None = None
) -> Iterator[Question]:
    if fmt == "mmlu" and path.name.removesuffix(".gz").endswith(".csv"):
        yield from _mmlu_csv(path, mmlu_style)
        return
    if fmt == "bigbench":
        yield from _bigbench(path, list_choices)
        return
    parsers: dict[str, Callable[[Path, int, dict[str, Any]], Question]] = {
        "arc": _arc,
        "hellaswag": _hellaswag,
        "generic": _generic,
        "mmlu": lambda p, n, item: _mmlu_json(p, n, item, mmlu_style),
    }
    labels = _piqa_labels(path) if fmt == "piqa" else None
    labels_path = path.with_name(path.name.removesuffix(".jsonl") + "-labels.lst")
    k = 0
    for lineno, item in iter_jsonl(path, "multiple-choice"):
        if not isinstance(item, dict):
            raise _bad(path, lineno, fmt, f"expected a JSON object, got {type(item).__name__}")
        if fmt == "piqa":
            label = None
            if labels is not None and "label" not in item:
                if k >= len(labels):
                    raise _bad(path, lineno, fmt, f"{labels_path} has only {len(labels)} labels")
                label = (labels_path, *labels[k])
            k += 1
            yield _piqa(path, lineno, item, label)
        else:
            yield parsers[fmt](path, lineno, item)
    if fmt == "piqa" and labels is not None and k != len(labels):
        raise CycleQDError(f"{labels_path}: {len(labels)} labels for {k} questions in {path}")


def load_questions(
    path: Path,
    fmt: str = "auto",
    *,
    mmlu_style: MmluStyle = "cloze",
    limit: int | None = None,
    seed: int | None = 0,
    exclude: tuple[int, int | None] | None = None,
    list_choices: bool | None = None,
) -> list[Question]:
    """Read a benchmark file; errors name the file and line of the first malformed record.

    ``limit`` keeps that many questions: a seeded random sample in file order (benchmark files
    are often sorted by subject, so the first N would test one subject), or the first N when
    ``seed`` is None. The whole file is checked either way. ``exclude`` (a ``(limit, seed)``
    pair) first removes the questions that sample would hold: how a search's questions are
    kept apart from the test questions of the same file. ``list_choices``: BIG-bench tasks
    only, see :func:`_bigbench`.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise CycleQDError(f"unknown multiple-choice format {fmt!r} (known: {', '.join(FORMATS)})")
    questions = list(_questions(path, fmt, mmlu_style, list_choices))
    if not questions:
        raise CycleQDError(f"{path}: no questions")
    if exclude is not None:
        held = set(_sample(len(questions), *exclude))
        questions = [q for i, q in enumerate(questions) if i not in held]
        if not questions:
            raise CycleQDError(f"{path}: no questions left after excluding {len(held)}")
    return [questions[i] for i in _sample(len(questions), limit, seed)]


def _sample(n: int, limit: int | None, seed: int | None) -> list[int]:
    """Indices of a seeded sample of ``limit`` of ``n`` items in their order (see above)."""
    if limit is None or limit >= n:
        return list(range(n))
    if seed is None:
        return list(range(limit))
    return sorted(random.Random(seed).sample(range(n), limit))


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class QuestionSample(BaseModel):
    """A seeded sample of a file's questions, as ``limit`` and ``seed`` draw it."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(ge=1)
    seed: int | None = 0


class MultipleChoiceParams(BaseModel):
    """``type: multiple_choice`` parameters."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    format: Literal["auto", "arc", "hellaswag", "piqa", "mmlu", "bigbench", "generic"] = Field(
        default="auto",
        description="auto: .csv is MMLU, .json a BIG-bench task, JSON Lines by their first "
        "record's keys",
    )
    metric: Metric = Field(default="acc_norm", description="which accuracy is the quality")
    limit: int | None = Field(default=None, ge=1)
    seed: int | None = Field(
        default=0, description="seeded sample of `limit` questions; null: the first `limit`"
    )
    mmlu_style: MmluStyle = "cloze"
    list_choices: bool | None = Field(
        default=None,
        description="BIG-bench tasks: list the choices in the prompt (null: as the task file's "
        "append_choices_to_input says; false: cloze scoring)",
    )
    target_delimiter: str = Field(default=" ", description="text between context and choice")
    exclude: QuestionSample | None = Field(
        default=None,
        description="leave out first the questions of this seeded sample of the same file "
        "(e.g. the demo's test questions), so a search never selects on them",
    )


class MultipleChoiceTask:
    """Quality = the chosen accuracy (``acc_norm`` by default) over the file's questions."""

    def __init__(self, name: str, params: MultipleChoiceParams) -> None:
        self.name = name
        self.params = params
        self.questions = load_questions(
            params.data,
            params.format,
            mmlu_style=params.mmlu_style,
            limit=params.limit,
            seed=params.seed,
            exclude=(params.exclude.limit, params.exclude.seed) if params.exclude else None,
            list_choices=params.list_choices,
        )

    def evaluate(self, engine: LanguageEngine) -> TaskResult:
        delim = self.params.target_delimiter
        contexts = [q.context for q in self.questions for _ in q.choices]
        continuations = [delim + c for q in self.questions for c in q.choices]
        lls = choice_loglikelihoods(engine, contexts, continuations)
        records: list[dict[str, Any]] = []
        at = 0
        for q in self.questions:
            mine = lls[at : at + len(q.choices)]
            at += len(q.choices)
            scored = score_choices(mine, q.choices, q.gold)
            records.append(
                {
                    "id": q.id,
                    **({"subject": q.subject} if q.subject else {}),
                    "context": q.context,
                    "choices": list(q.choices),
                    "gold": q.gold,
                    "loglikelihoods": mine,
                    **scored,
                    "score": scored[self.params.metric],
                }
            )
        quality = sum(r["score"] for r in records) / len(records)
        return TaskResult(min(1.0, max(0.0, quality)), records)


register_task("multiple_choice", MultipleChoiceParams)(MultipleChoiceTask)
