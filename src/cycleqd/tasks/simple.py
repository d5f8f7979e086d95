"""Simple text tasks: exact match of greedy completions, and target likelihood.

They are real CycleQD tasks (used by the tiny example and the tests) and a template for bringing
any prompt/answer data set: a JSONL file of ``{"prompt": ..., "target": ...}`` lines.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cycleqd.errors import CycleQDError
from cycleqd.tasks.base import LanguageEngine, TaskResult, register_task
from cycleqd.tasks.files import iter_jsonl


def read_prompt_targets(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """Read ``{"prompt", "target"}`` lines; errors name the file and line."""
    samples = []
    for lineno, item in iter_jsonl(path, "task"):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) for k in ("prompt", "target")
        ):
            raise CycleQDError(f"{path}:{lineno}: expected string fields 'prompt' and 'target'")
        samples.append({"prompt": item["prompt"], "target": item["target"]})
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise CycleQDError(f"{path}: no samples")
    return samples


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path
    limit: int | None = Field(default=None, ge=1)
    chat: bool = False


class ExactMatchParams(_Params):
    max_new_tokens: int = Field(default=16, ge=1)
    stop: list[str] = Field(default_factory=list)


class ExactMatchTask:
    """Quality = fraction of prompts whose greedy completion equals the target (stripped)."""

    def __init__(self, name: str, params: ExactMatchParams) -> None:
        self.name = name
        self.params = params
        self.samples = read_prompt_targets(params.data, params.limit)

    def evaluate(self, engine: LanguageEngine) -> TaskResult:
        outputs = engine.generate(
            [s["prompt"] for s in self.samples],
            max_new_tokens=self.params.max_new_tokens,
            stop=self.params.stop,
            chat=self.params.chat,
        )
        records = []
        for s, out in zip(self.samples, outputs, strict=True):
            ok = out.strip() == s["target"].strip()
            records.append({**s, "output": out, "score": float(ok)})
        return TaskResult(sum(r["score"] for r in records) / len(records), records)


class LikelihoodTask:
    """Quality = mean per-sample likelihood ``exp(mean log p(target token | prefix))``.

    Continuous where exact match is coarse, which suits tiny models and short searches.
    """

    def __init__(self, name: str, params: _Params) -> None:
        self.name = name
        self.params = params
        self.samples = read_prompt_targets(params.data, params.limit)

    def evaluate(self, engine: LanguageEngine) -> TaskResult:
        scores = engine.target_likelihood(
            [s["prompt"] for s in self.samples],
            [s["target"] for s in self.samples],
            chat=self.params.chat,
        )
        records = [{**s, "score": sc} for s, sc in zip(self.samples, scores, strict=True)]
        return TaskResult(min(1.0, max(0.0, sum(scores) / len(scores))), records)


register_task("exact_match", ExactMatchParams)(ExactMatchTask)
register_task("likelihood", _Params)(LikelihoodTask)
