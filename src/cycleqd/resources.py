"""Peak resident memory of a stretch of work (the demo records it per stage).

``ru_maxrss`` only grows, so it cannot tell which stage reached the peak. Linux lets a process
reset its own high-water mark (writing ``5`` to ``/proc/self/clear_refs``) and read it back
(``VmHWM`` in ``/proc/self/status``), which gives each stage its own peak. Elsewhere the
process's lifetime peak is reported instead, and :func:`reset_peak` says it could not reset.
Child processes (sandboxes, the database server) are not in it.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak() -> bool:
    """Start a new high-water mark of this process's resident memory; False where the OS
    cannot (the next :func:`peak_rss_bytes` is then the lifetime peak)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak resident memory since the last :func:`reset_peak` (or its start)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux
