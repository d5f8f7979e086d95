"""The ``code`` task type: pass@1 with greedy decoding on MBPP- or HumanEval-format problems.

Quality is the fraction of problems whose extracted program passes all of its tests in the
sandbox. Generation is one batched ``engine.generate`` call (chat messages by default, since the
experts are instruct models); grading then runs the programs in parallel.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cycleqd.sandbox import Limits, Sandbox
from cycleqd.sandbox.runner import DEFAULT_PYTHON
from cycleqd.tasks.base import LanguageEngine, TaskResult, register_task
from cycleqd.tasks.code.data import CodeProblem, load_problems
from cycleqd.tasks.code.extract import answer_complete
from cycleqd.tasks.code.grader import Grader
from cycleqd.tasks.code.prompts import answer_to_code, build_prompt, default_stops


class CodeParams(BaseModel):
    """``params`` of a ``type: code`` task.

    Attributes:
        data: MBPP jsonl or HumanEval jsonl / jsonl.gz file.
        format: ``auto`` tells them apart by their fields.
        split: MBPP split by task id (prompt 1-10, test 11-510, validation 511-600,
            train 601-974) or ``all`` (the only choice for HumanEval and suite files).
        limit: keep the first ``limit`` problems of the split.
        max_new_tokens: generation budget per answer.
        timeout_s: wall-clock limit per program (also its CPU-seconds limit).
        memory_mb: address-space limit per process.
        workers: programs graded at once (default: all cores).
        unsandboxed: run programs without bubblewrap (unsafe; warned on every run).
        chat: send the prompt as a chat message (instruct models) or as raw text to continue.
        stop: stop strings (default: none for chat, the format's conventional ones otherwise).
        challenge_tests: also run MBPP's ``challenge_test_list``.
        python: interpreter inside the sandbox (a system one: the sandbox hides the checkout).
    """

    model_config = ConfigDict(extra="forbid")

    data: Path
    format: Literal["mbpp", "humaneval", "auto"] = "auto"
    split: Literal["prompt", "test", "validation", "train", "all"] = "all"
    limit: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=512, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=1024, ge=64)
    workers: int | None = Field(default=None, ge=1)
    unsandboxed: bool = False
    chat: bool = True
    stop: list[str] | None = None
    challenge_tests: bool = False
    python: str = DEFAULT_PYTHON


def make_sandbox(
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    unsandboxed: bool = False,
    python: str = DEFAULT_PYTHON,
) -> Sandbox:
    """A sandbox with per-program limits derived from the task's few knobs."""
    limits = Limits(
        wall_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s)), memory_bytes=memory_mb << 20
    )
    return Sandbox(limits=limits, unsandboxed=unsandboxed, python=python)


class CodeTask:
    """Scores the engine's model on coding problems; see :class:`CodeParams`."""

    def __init__(self, name: str, params: CodeParams) -> None:
        self.name = name
        self.params = params
        self.problems: list[CodeProblem] = load_problems(
            params.data, params.format, params.split, params.limit
        )
        sandbox = make_sandbox(
            timeout_s=params.timeout_s,
            memory_mb=params.memory_mb,
            unsandboxed=params.unsandboxed,
            python=params.python,
        )
        self.grader = Grader(sandbox, workers=params.workers)
        fmt = self.problems[0].format
        self.stop = params.stop if params.stop is not None else default_stops(fmt, params.chat)

    def evaluate(self, engine: LanguageEngine) -> TaskResult:
        chat = self.params.chat
        prompts = [build_prompt(p, chat) for p in self.problems]
        outputs = engine.generate(
            prompts,
            max_new_tokens=self.params.max_new_tokens,
            stop=self.stop,
            chat=chat,
            until=answer_complete,
        )
        codes = [
            answer_to_code(p, out, chat) for p, out in zip(self.problems, outputs, strict=True)
        ]
        verdicts = self.grader.grade_many(
            list(zip(self.problems, codes, strict=True)), challenge=self.params.challenge_tests
        )
        records = [
            {
                "sample_id": p.sample_id,
                "prompt": prompt,
                "output": out,
                "code": code,
                "passed": v.passed,
                "score": float(v.passed),
                "error": v.error,
            }
            for p, prompt, out, code, v in zip(
                self.problems, prompts, outputs, codes, verdicts, strict=True
            )
        ]
        return TaskResult(sum(v.passed for v in verdicts) / len(verdicts), records)


register_task("code", CodeParams)(CodeTask)
