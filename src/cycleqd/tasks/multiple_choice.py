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

import contextlib
import csv
import inspect
import io
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cycleqd.errors import CycleQDError
from cycleqd.tasks.base import TaskResult, register_task
from cycleqd.tasks.files import iter_jsonl, read_text, require_file

__all__ = [
    "FORMATS",
    "MultipleChoiceParams",
    "MultipleChoiceTask",
    "Question",
    "choice_loglikelihoods",
    "detect_format",
    "encode_pair",
    "load_questions",
    "loglikelihoods_on_model",
    "score_choices",
    "summarise",
]

Format = Literal["arc", "hellaswag", "piqa", "mmlu", "bigbench", "generic"]
FORMATS: tuple[str, ...] = ("arc", "hellaswag", "piqa", "mmlu", "bigbench", "generic")
Metric = Literal["acc_norm", "acc", "acc_bytes"]
MmluStyle = Literal["cloze", "letters"]

# lm-eval's fallback when neither the config nor the tokenizer states a context length.
_DEFAULT_MAX_LENGTH = 2048
# transformers' "no limit" value of ``tokenizer.model_max_length``.
_TOKENIZER_INFINITY = 10**29


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
    engine: Any, contexts: Sequence[str], continuations: Sequence[str]
) -> list[float]:
    """``log p(continuation | context)`` summed over the continuation's tokens, per pair.

    An engine that has its own ``loglikelihood(contexts, continuations, groups=None)`` is asked
    (it may batch across a population of children); otherwise the pairs are scored here on
    ``engine.model`` with ``engine.tokenizer``, ``engine.device`` and ``engine.batch_size``.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    if not contexts:
        return []
    method = getattr(engine, "loglikelihood", None)
    if callable(method):
        out = method(list(contexts), list(continuations))
        # lm-eval's models answer (loglikelihood, is_greedy); take the number either way.
        return [float(x[0] if isinstance(x, tuple | list) else x) for x in out]
    if getattr(engine, "row_groups", None) is not None:
        # Rows of a population belong to different children; a plain forward has no row
        # assignment, so the population's hooks would refuse it (or, worse, mix children).
        raise CycleQDError(
            "multiple_choice: this engine scores one model at a time; evaluate children one by "
            "one (executor.children_per_batch: 1 or executor.population: off)"
        )
    return loglikelihoods_on_model(
        engine.model,
        engine.tokenizer,
        torch.device(engine.device),
        max(1, int(getattr(engine, "batch_size", 16) or 16)),
        contexts,
        continuations,
    )


def _prefix_token_id(tokenizer: Any) -> int:
    """The token an empty context becomes: BOS, else EOS (lm-eval's ``prefix_token_id``)."""
    token = tokenizer.bos_token_id
    if token is None:
        token = tokenizer.eos_token_id
    if token is None:
        raise CycleQDError("multiple_choice: the tokenizer has neither a BOS nor an EOS token")
    return int(token)


def _encode(tokenizer: Any, text: str, prefix_text: str) -> list[int]:
    """The tokenizer's default encoding (its own special tokens), none added twice.

    lm-eval leaves special tokens to the tokenizer unless the text already starts with the
    BOS text, so a Llama-style tokenizer adds ``<s>`` and a GPT-2-style one adds nothing.
    """
    if prefix_text and text.startswith(prefix_text):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split as lm-eval's ``HFLM`` splits them.

    Trailing whitespace of the context moves to the continuation; the whole text is encoded
    once and split at the context's own token count, so a token that spans the boundary in
    the whole encoding is not scored twice or half.
    """
    prefix = _prefix_token_id(tokenizer)
    if context == "":
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if cont and cont[0] == prefix:
            return cont[:1], cont[1:]
        return [prefix], cont
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    prefix_text = tokenizer.decode([prefix])
    whole = _encode(tokenizer, context + continuation, prefix_text)
    ctx = _encode(tokenizer, context, prefix_text)
    return ctx, whole[len(ctx) :]


def _max_length(model: Any, tokenizer: Any) -> int:
    """The model's context length: its config, else the tokenizer's, else 2048 (as lm-eval)."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _TOKENIZER_INFINITY:
        return limit
    return _DEFAULT_MAX_LENGTH


@dataclass
class _Row:
    """One scored pair: the model input (context + continuation, last token dropped)."""

    inp: list[int]
    cont: list[int]

    @property
    def first(self) -> int:
        """Input position whose logits predict the first continuation token."""
        return len(self.inp) - len(self.cont)


def _common_prefix(seqs: Sequence[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for other in seqs[1:]:
        k = 0
        while k < n and other[k] == first[k]:
            k += 1
        n = k
    return n


@torch.no_grad()
def loglikelihoods_on_model(
    model: Any,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    share: bool = True,
    groups: Sequence[int] | None = None,
    rows_of: Callable[[list[int]], AbstractContextManager[None]] | None = None,
) -> list[float]:
    """Batched summed log-likelihoods on a transformers causal LM.

    ``groups`` (one per pair) and ``rows_of`` serve a population of children on one resident
    model (see :mod:`cycleqd.merging.population`): pairs of different groups never share a
    prefix, and every forward pass runs inside ``rows_of(pair indices of its rows)``, which
    tells the population's hooks whose delta each row gets.

    The choices of one question share its context, which is most of every row (an MMLU
    question is hundreds of tokens, its choices a few). So, where the model takes a cache and
    position ids, the rows of one context are scored in two passes: the shared prefix once per
    context, then every choice's remaining tokens against a copy of its context's keys and
    values; that is up to n-choices times fewer tokens through the model. Rows with nothing
    to share, and models without those arguments, take one plain pass. Both paths right-pad
    (real tokens keep the positions of an unpadded pass), sort longest first as lm-eval does,
    and compute logits only from the first continuation position on when the model takes
    ``logits_to_keep`` (the vocabulary projection of the context is most of a long batch's
    memory and none of its answer). ``share=False`` forces the plain path everywhere.
    """
    max_len = _max_length(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    rows: list[_Row] = []
    for context, continuation in zip(contexts, continuations, strict=True):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if len(cont) >= max_len:  # its first token needs at least one token before it
            raise CycleQDError(
                f"multiple_choice: a continuation of {len(cont)} tokens does not fit the "
                f"model's context of {max_len} tokens"
            )
        rows.append(_Row((ctx + cont)[-(max_len + 1) :][:-1], cont))
    out = [0.0] * len(rows)
    forward = inspect.signature(type(model).forward).parameters
    keep_logits = "logits_to_keep" in forward
    cache_arg = next((a for a in ("cache", "past_key_values") if a in forward), None)
    by_context: dict[tuple[int, str], list[int]] = {}
    for i, context in enumerate(contexts):
        if rows[i].cont:  # an empty continuation scores 0
            owner = int(groups[i]) if groups is not None else 0
            by_context.setdefault((owner, context), []).append(i)
    shared: list[tuple[int, list[int]]] = []  # (shared prefix length, rows)
    plain: list[int] = []
    for members in by_context.values():
        inputs = [rows[i].inp for i in members]
        # The prefix ends before the first position whose logits are needed.
        q = min(_common_prefix(inputs), min(rows[i].first for i in members))
        can = share and cache_arg is not None and "position_ids" in forward
        if can and len(members) > 1 and q > 0:
            shared.append((q, members))
        else:
            plain.extend(members)
    enter = rows_of or (lambda _rows: contextlib.nullcontext())
    run = _Runner(model, device, int(pad), keep_logits, cache_arg, rows, out, enter)
    plain.sort(key=lambda i: -len(rows[i].inp))
    for at in range(0, len(plain), batch_size):
        run.plain(plain[at : at + batch_size])
    shared.sort(key=lambda g: -max(len(rows[i].inp) for i in g[1]))
    batch: list[tuple[int, list[int]]] = []
    for group in shared:
        if batch and sum(len(m) for _, m in batch) + len(group[1]) > batch_size:
            run.shared(batch)
            batch = []
        batch.append(group)
    if batch:
        run.shared(batch)
    return out


@dataclass
class _Runner:
    """The forward passes of :func:`loglikelihoods_on_model`; results land in ``out``."""

    model: Any
    device: torch.device
    pad: int
    keep_logits: bool
    cache_arg: str | None
    rows: list[_Row]
    out: list[float]
    enter: Callable[[list[int]], AbstractContextManager[None]]

    def _padded(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, seq in enumerate(seqs):
            ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[r, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _collect(self, logits: torch.Tensor, batch: list[int], starts: list[int]) -> None:
        """Sum each row's continuation log-probs; ``starts[r]``: its first logit's column."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, i in enumerate(batch):
            cont = self.rows[i].cont
            target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
            picked = logprobs[r, starts[r] : starts[r] + len(cont)].gather(1, target[:, None])
            self.out[i] = float(picked.sum())

    def _keep(self, width: int, first: int) -> dict[str, int]:
        return {"logits_to_keep": width - first} if self.keep_logits else {}

    def plain(self, batch: list[int]) -> None:
        """One pass over whole rows."""
        ids, mask = self._padded([self.rows[i].inp for i in batch])
        width = ids.shape[1]
        first = min(self.rows[i].first for i in batch)
        with self.enter(batch):
            logits = self.model(
                input_ids=ids, attention_mask=mask, use_cache=False, **self._keep(width, first)
            ).logits
        offset = width - logits.shape[1]  # sequence position of logits[:, 0]
        self._collect(logits, batch, [self.rows[i].first - offset for i in batch])

    def shared(self, groups: list[tuple[int, list[int]]]) -> None:
        """Each group's prefix once, then all its rows' suffixes against its keys and values.

        Prefixes are right-padded too, so a suffix continues after its own prefix's last real
        token (explicit position ids) while the pads between them are masked out.
        """
        assert self.cache_arg is not None
        prefixes = [self.rows[members[0]].inp[:q] for q, members in groups]
        ids, mask = self._padded(prefixes)
        extra = {"logits_to_keep": 1} if self.keep_logits else {}
        with self.enter([members[0] for _, members in groups]):
            result = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **extra)
        cache = result["cache"] if "cache" in result else result["past_key_values"]
        batch = [i for _, members in groups for i in members]
        owner = [g for g, (_, members) in enumerate(groups) for _ in members]
        lengths = [q for q, members in groups for _ in members]
        cache.batch_select_indices(torch.tensor(owner, device=self.device))
        sids, smask = self._padded(
            [self.rows[i].inp[q:] for i, q in zip(batch, lengths, strict=True)]
        )
        width = sids.shape[1]
        positions = torch.tensor(lengths, device=self.device)[:, None] + torch.arange(
            width, device=self.device
        )
        first = min(self.rows[i].first - q for i, q in zip(batch, lengths, strict=True))
        with self.enter(batch):
            logits = self.model(
                input_ids=sids,
                attention_mask=torch.cat([mask[owner], smask], dim=1),
                position_ids=positions,
                **{self.cache_arg: cache},
                **self._keep(width, first),
            ).logits
        offset = width - logits.shape[1]
        starts = [self.rows[i].first - q - offset for i, q in zip(batch, lengths, strict=True)]
        self._collect(logits, batch, starts)


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

    def evaluate(self, engine: Any) -> TaskResult:
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
