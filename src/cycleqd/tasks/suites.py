"""Registry of procedural suites (``code-mini``, ``os-mini``, ``db-mini``).

A suite is a seeded generator that emits samples in a public benchmark format (MBPP, AgentBench
OS, DBBench) plus a gold ``trajectory``: the list of assistant replies that solves the sample.
Emitting the public formats means the tasks, graders and ``cycleqd data check`` need no special
case for generated data, and the trajectories are what expert training learns from.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from cycleqd.errors import CycleQDError
from cycleqd.registry import Registry

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Suite:
    name: str
    data_format: str  # the checker / loader format its samples use (mbpp, agentbench-os, dbbench)
    # generate(split, n, seed, level) -> samples; level None mixes all difficulty levels
    generate: Callable[[str, int, int, int | None], list[dict[str, Any]]]
    levels: tuple[int, ...] = (1, 2, 3)


SUITES: Registry[Suite] = Registry("suite")


def register_suite(suite: Suite) -> Suite:
    return SUITES.add(suite.name, suite)


def suite_names() -> list[str]:
    return SUITES.names()


def get_suite(name: str) -> Suite:
    return SUITES.get(name)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise CycleQDError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")


@dataclass(frozen=True)
class SplitRule:
    """Which split a sample belongs to, from a hash of its content alone.

    ``shares``: the splits' shares of the hash's range, in :data:`SPLITS` order.
    ``digest_bytes``: how many leading bytes of the SHA-256 digest make the number (None: all).
    Why by content: splits never share a sample, whatever seeds or sizes are asked for.
    """

    shares: tuple[int, int, int] = (1, 1, 1)
    digest_bytes: int | None = None

    def of(self, content: str) -> str:
        digest = hashlib.sha256(content.encode()).digest()
        value = int.from_bytes(digest[: self.digest_bytes] if self.digest_bytes else digest, "big")
        bucket = value % sum(self.shares)
        for name, share in zip(SPLITS, self.shares, strict=True):
            if bucket < share:
                return name
            bucket -= share
        raise AssertionError("unreachable: the buckets cover the range")


C = TypeVar("C")


@dataclass(frozen=True)
class Generator(Generic[C]):
    """The skeleton every procedural suite shares: draw candidates from a seeded stream, keep
    the distinct ones of the asked split, until there are ``n``.

    Each suite gives its own rules as parameters: ``draw(rng, level)`` a candidate (None: none
    this time), ``key`` what makes two candidates the same sample, ``content`` what its split is
    decided on (by ``split_rule``), ``finish(candidate, level, index)`` the sample itself;
    ``rng_key`` the seed string of one (seed, split, level) stream (formatted with those names),
    ``mixing`` how ``level=None`` mixes levels (``random``: a draw from the stream; ``cycle``:
    1, 2, 3, 1, ... by position), ``attempts(n)`` how many candidates may be drawn for ``n``.
    """

    name: str
    levels: tuple[int, ...]
    rng_key: str
    mixing: Literal["random", "cycle"]
    split_rule: SplitRule
    attempts: Callable[[int], int]
    draw: Callable[[random.Random, int], C | None]
    key: Callable[[C], str]
    content: Callable[[C], str]
    finish: Callable[[C, int, str, int, int], dict[str, Any]]

    def __call__(
        self, split: str, n: int, seed: int, level: int | None = None
    ) -> list[dict[str, Any]]:
        """``n`` distinct samples of ``split``; ``level`` None mixes the levels."""
        check_split(split)
        if level is not None and level not in self.levels:
            raise CycleQDError(f"{self.name}: unknown level {level} (levels: {self.levels})")
        if n < 0:
            raise CycleQDError("the number of samples must be >= 0")
        rng = random.Random(self.rng_key.format(seed=seed, split=split, level=level))
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        limit = self.attempts(n)
        tried = 0
        while len(out) < n:
            tried += 1
            if tried > limit:
                raise CycleQDError(f"{self.name}: could not draw {n} distinct {split} samples")
            if level is not None:
                lvl = level
            elif self.mixing == "random":
                lvl = rng.choice(self.levels)
            else:
                lvl = self.levels[len(out) % len(self.levels)]
            candidate = self.draw(rng, lvl)
            if candidate is None:
                continue
            key = self.key(candidate)
            if key in seen or self.split_rule.of(self.content(candidate)) != split:
                continue
            seen.add(key)
            out.append(self.finish(candidate, lvl, split, seed, len(out)))
        return out


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    """Write samples as JSONL, or as one JSON list when ``path`` ends in ``.json`` (AgentBench OS
    style). Written atomically, so an interrupted generation never leaves half a split behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        text = json.dumps(samples, indent=1) + "\n"
    else:
        text = "".join(json.dumps(s) + "\n" for s in samples)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
