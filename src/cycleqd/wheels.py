"""Wheels from the package index: how models and data sets that ship on PyPI reach the cache.

Shared by the model zoo and the data zoo, so neither imports the other.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cycleqd.errors import CycleQDError


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with pip (``--no-deps``, binary only) and return its path.

    pip checks the archive against the hashes PyPI publishes and honours the user's index
    configuration (mirrors, proxies), which a hand-rolled HTTP download would not.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", requirement, "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CycleQDError(f"pip download {requirement} failed: {' | '.join(tail)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise CycleQDError(
            f"pip download {requirement} produced {len(wheels)} wheels in {dest}, expected one"
        )
    return wheels[0]
