"""The run directory: every file the search writes, each written atomically.

Layout::

    config.yaml        the resolved config (absolute paths): what ``cycleqd resume`` reads
    state.json         phase, generations done, expert scores, BC ranges, archives: the commit point
    individuals/       one genome per archived individual (``<id>.safetensors``)
    metrics.jsonl      one line per generation
    summary.json       the numbers a user looks at first
    plots/             elite maps and progress curves
    final/             the final model (a Hugging Face directory) and its per-sample records

A generation becomes durable only when ``state.json`` is replaced; everything written before that
(a child's genome, its metrics line) is either overwritten or dropped when the generation is redone
after a crash, so a resumed run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cycleqd.errors import CycleQDError
from cycleqd.merging.genome import Genome

STATE_FORMAT = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file of the run; a damaged file is an error that names it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CycleQDError(f"{path}: missing from the run directory") from exc
    except (OSError, ValueError) as exc:
        raise CycleQDError(f"{path}: corrupted ({exc})") from exc


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- creation ------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def final_dir(self) -> Path:
        return self.root / "final"

    @property
    def key_path(self) -> Path:
        return self.root / "run_key"

    def read_key(self) -> str | None:
        """The run key written when the run started (``search.run.run_key``), if any."""
        return self.key_path.read_text().strip() if self.key_path.is_file() else None

    def write_key(self, key: str) -> None:
        atomic_write_text(self.key_path, key + "\n")

    def ensure_new(self, *, force: bool = False) -> None:
        """Refuse to start over an existing non-empty directory unless ``force``."""
        if self.root.exists() and any(self.root.iterdir()) and not force:
            raise CycleQDError(
                f"run directory {self.root} already exists; use --force to overwrite it "
                f"or `cycleqd resume {self.root}` to continue it"
            )

    def create(self, config_yaml: str, *, force: bool = False) -> None:
        """Start a fresh run directory; an existing non-empty one needs ``force``."""
        self.ensure_new(force=force)
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, config_yaml)

    def exists(self) -> bool:
        return self.state_path.is_file()

    # -- state ---------------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        state = read_json(self.state_path)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CycleQDError(f"{self.state_path}: corrupted (not a cycleqd state file)")
        return state

    def commit(self, state: dict[str, Any]) -> None:
        state = {"format": STATE_FORMAT, **state}
        atomic_write_text(self.state_path, json.dumps(state, indent=1))

    # -- individuals ---------------------------------------------------------------------------
    def individual_path(self, individual: str) -> Path:
        return self.root / "individuals" / f"{individual}.safetensors"

    def save_individual(self, individual: str, genome: Genome) -> None:
        genome.save(self.individual_path(individual))

    def load_individual(self, individual: str) -> Genome:
        path = self.individual_path(individual)
        if not path.is_file():
            raise CycleQDError(f"{path}: missing from the run directory (archived individual)")
        return Genome.load(path)

    def prune_individuals(self, keep: set[str]) -> None:
        """Delete genomes no archive refers to (children that lost, elites that were replaced)."""
        folder = self.root / "individuals"
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if (
                path.name.endswith(".safetensors") and path.name[: -len(".safetensors")] not in keep
            ) or path.name.endswith(".tmp"):
                path.unlink()

    # -- metrics -------------------------------------------------------------------------------
    def append_metrics(self, line: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        lines = []
        for text in self.metrics_path.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue  # a line cut short by a crash; repair_metrics drops it
        return lines

    def repair_metrics(self, generations_done: int) -> None:
        """Keep exactly one line per committed generation (drops lines of an unfinished one)."""
        kept: dict[int, dict[str, Any]] = {}
        for line in self.read_metrics():
            gen = line.get("generation")
            if isinstance(gen, int) and gen < generations_done:
                kept[gen] = line
        text = "".join(json.dumps(kept[g]) + "\n" for g in sorted(kept))
        atomic_write_text(self.metrics_path, text)

    # -- summary -------------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.root / "summary.json", json.dumps(summary, indent=2))

    def write_json(self, relative: str, data: Any) -> None:
        atomic_write_text(self.root / relative, json.dumps(data, indent=1))
