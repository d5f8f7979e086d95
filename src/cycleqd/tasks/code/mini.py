"""``code-mini``: a seeded procedural coding suite in MBPP format, sized for tiny models.

Samples are MBPP records (``task_id``, ``text``, ``code``, ``test_list``, ``test_setup_code``,
``challenge_test_list``) plus ``level`` and ``trajectory`` (the gold assistant reply: the reference
in a ```python fence), so the ``code`` task, the ``mbpp`` loader and ``cycleqd data check`` need no
special case, and expert training learns from the trajectories.

Splits never share a sample, whatever the seeds: a sample belongs to the split its content hash
(text + tests) falls in (80% train, 10% validation, 10% test), and each split's generator only
keeps samples of its own split. Each split draws from its own RNG, derived from (seed, split),
so asking for more train samples never changes the test samples. Expected outputs come from
executing the reference in-process: it is our own code, and it makes tests and solutions agree
by construction.
"""

from __future__ import annotations

import random
from typing import Any

from cycleqd.tasks.code.families import FAMILIES, Spec
from cycleqd.tasks.suites import Generator, SplitRule, Suite, register_suite

LEVELS = (1, 2, 3)
# 80% train, 10% validation, 10% test, by the first 8 bytes of the content's digest
SPLIT_RULE = SplitRule(shares=(80, 10, 10), digest_bytes=8)
_MAX_TRIES_PER_SAMPLE = 500


def split_of(text: str, tests: list[str]) -> str:
    """The split a sample belongs to, from a stable hash of its content."""
    return SPLIT_RULE.of("\n".join([text, *tests]))


def _tests(spec: Spec) -> list[str]:
    namespace: dict[str, Any] = {}
    exec(spec.code, namespace)  # our own reference code, to compute the expected outputs
    fn = namespace[spec.name]
    tests = []
    for args in spec.inputs:
        expected = fn(*args)
        call = f"{spec.name}({', '.join(repr(a) for a in args)})"
        tests.append(f"assert {call} == {expected!r}")
    return tests


def _sample(spec: Spec, task_id: str, level: int, tests: list[str]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "text": spec.text,
        "code": spec.code,
        "test_list": tests,
        "test_setup_code": "",
        "challenge_test_list": [],
        "level": level,
        "trajectory": [f"```python\n{spec.code}\n```"],
    }


Candidate = tuple[Spec, list[str]]


def _draw(rng: random.Random, level: int) -> Candidate:
    spec = rng.choice(FAMILIES[level])(rng)
    return spec, _tests(spec)


def _content(candidate: Candidate) -> str:
    spec, tests = candidate
    return "\n".join([spec.text, *tests])


def _finish(candidate: Candidate, level: int, split: str, seed: int, index: int) -> dict[str, Any]:
    spec, tests = candidate
    return _sample(spec, f"code-mini/{split}/{index}", level, tests)


generate: Generator[Candidate] = Generator(
    name="code-mini",
    levels=LEVELS,
    rng_key="code-mini/{seed}/{split}",
    mixing="random",
    split_rule=SPLIT_RULE,
    attempts=lambda n: _MAX_TRIES_PER_SAMPLE * max(n, 1),
    draw=_draw,
    key=_content,
    content=_content,
    finish=_finish,
)


SUITE = register_suite(Suite("code-mini", "mbpp", generate, LEVELS))
