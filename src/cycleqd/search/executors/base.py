"""The executor contract: submit genomes, receive their scores in completion order.

The loop never learns where a genome was evaluated. A serial executor evaluates in the calling
process; a Ray executor keeps several children in flight on remote actors and returns whichever
finishes first. Genomes travel, weights never do: every worker materialises them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cycleqd.merging.genome import Genome


@dataclass
class Evaluation:
    """Scores of one submitted genome; ``records`` (per task) only when they were asked for.

    ``path`` says how it was evaluated (``batched(K)`` in a shared forward with K-1 other
    children, or ``materialised`` alone, with the reason), for the metrics log.
    """

    key: str
    scores: dict[str, float]
    records: dict[str, dict[str, Any]] | None = None
    path: str = ""


class Executor(Protocol):
    """Evaluates genomes on every task."""

    @property
    def capacity(self) -> int:
        """How many genomes may be in flight at once."""
        ...

    def submit(self, key: str, genome: Genome, *, records: bool = False) -> None: ...

    def next_result(self) -> Evaluation:
        """Block until one submitted genome is scored; return it (any order)."""
        ...

    def export(self, genome: Genome, out_dir: Path) -> str:
        """Write ``genome`` as a model directory; returns its path."""
        ...

    def close(self) -> None: ...
