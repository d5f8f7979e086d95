"""Registry of procedural suites (``code-mini``, ``os-mini``, ``db-mini``).

A suite is a seeded generator that emits samples in a public benchmark format (MBPP, AgentBench
OS, DBBench) plus a gold ``trajectory``: the list of assistant replies that solves the sample.
Emitting the public formats means the tasks, graders and ``cycleqd data check`` need no special
case for generated data, and the trajectories are what expert training learns from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
