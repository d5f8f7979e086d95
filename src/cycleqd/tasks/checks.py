"""Reference-solution checks of data files (``cycleqd data check``).

Every benchmark format registers a checker that runs each sample's reference solution (MBPP code,
an OS example script, a DBBench label...) through the *real* evaluator and environment. A sample
the environment cannot support (one that needs the network, say) is reported as unsupported, not
as failed, so the command tells users exactly which part of their data we can score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cycleqd.registry import Registry

Status = Literal["passed", "failed", "unsupported"]


@dataclass(frozen=True)
class CheckOutcome:
    sample_id: str
    status: Status
    detail: str = ""


@dataclass(frozen=True)
class CheckOptions:
    """What a checker may need beside the data file."""

    scripts: Path | None = None  # AgentBench OS: the scripts folder of the data file
    workers: int = 2
    db_url: str | None = None  # DBBench: an existing server instead of our own MariaDB
    unsandboxed: bool = False  # code: run without bubblewrap (explicit, warned)


Checker = Callable[[Path, CheckOptions], Iterator[CheckOutcome]]
CHECKERS: Registry[Checker] = Registry("data format")


def register_checker(name: str) -> Callable[[Checker], Checker]:
    return CHECKERS.register(name)


def checker_names() -> list[str]:
    return CHECKERS.names()


def get_checker(name: str) -> Checker:
    return CHECKERS.get(name)
