"""Config overlays that ship with the package: the demo's presets, the paper's operators, the
vision demo's variant search.

An overlay is a YAML mapping of config key paths to values, exactly what ``cycleqd run --set``
takes (``search.crossover.kind: per_expert``), so a user can read, copy and apply any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cycleqd.errors import CycleQDError

ROOT = Path(__file__).resolve().parent


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; anything else is an error naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CycleQDError(f"{path}: cannot read it as YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise CycleQDError(f"{path}: the top level must be a mapping")
    return data


def read_overrides(path: Path) -> dict[str, Any]:
    """A YAML file of ``key.path: value`` overrides, in file order."""
    data = read_yaml(path)
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise CycleQDError(f"{path}: keys must be config key paths, got {bad[0]!r}")
    return data


def overlay(name: str) -> dict[str, Any]:
    """The shipped overlay ``name`` (``paper``, ``vision/variant``)."""
    return read_overrides(ROOT / f"{name}.yaml")
