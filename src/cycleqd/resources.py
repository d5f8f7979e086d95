"""Peak resident memory of a stretch of work (the demo records it per stage), and what keeps
it down (freed memory handed back, oneDNN's kernel cache bounded).

``ru_maxrss`` only grows, so it cannot tell which stage reached the peak. Linux lets a process
reset its own high-water mark (writing ``5`` to ``/proc/self/clear_refs``) and read it back
(``VmHWM`` in ``/proc/self/status``), which gives each stage its own peak. Elsewhere the
process's lifetime peak is reported instead, and :func:`reset_peak` says it could not reset.
Child processes (sandboxes, the database server) are not in it.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from pathlib import Path

from cycleqd.allocator import in_use, release_free_memory

_CLEAR_REFS = Path("/proc/self/clear_refs")
# oneDNN kernels kept for reuse (its default: 1024); see bound_kernel_cache
KERNEL_CACHE_CAPACITY = 128
_STATUS = Path("/proc/self/status")


_child_peak = 0  # the highest peak of a child run since the last reset (note_child_peak)


def reset_peak() -> bool:
    """Start a new high-water mark of this process's resident memory; False where the OS
    cannot (the next :func:`peak_rss_bytes` is then the lifetime peak)."""
    global _child_peak
    _child_peak = 0
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_bytes(key: str) -> int | None:
    """A memory figure of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int:
    """This process's resident memory now (0 where ``/proc`` cannot tell)."""
    return _status_bytes("VmRSS") or 0


def release_memory() -> None:
    """Collect garbage, then hand the allocator's free memory back to the OS.

    Why: an allocator keeps freed memory for reuse, so a process that trained a model or scored
    a benchmark would hold that work's peak for the rest of its life; the demo's later stages
    (the search, the test evaluation) then started several GB above what they use.
    """
    gc.collect()
    release_free_memory()


def trim_heap() -> None:
    """Hand glibc's free heap back to the OS, without a garbage collection; nothing on TCMalloc.

    For memory freed by reference counting, such as a training step's activations: a full
    collection costs about 0.2 s in a process that imported torch and transformers (half a
    million objects), which every training step would pay. glibc's heap grows from step to step
    without it (2.5 GB more between the os expert's steps); TCMalloc reuses a step's freed
    memory for the next, and handing it back would only make the next step fault its pages in
    again (docs/results.md).
    """
    if in_use() == "system":
        release_free_memory()


def note_child_peak(peak: int) -> None:
    """Count a child process's peak resident memory (work run in a child by
    :func:`cycleqd.isolation.run_in_child`) in :func:`peak_rss_bytes` until the next reset."""
    global _child_peak
    _child_peak = max(_child_peak, peak)


def peak_rss_bytes() -> int:
    """The peak resident memory since the last :func:`reset_peak` (or the start) of this
    process or of a child whose peak was noted, whichever is higher."""
    high = _status_bytes("VmHWM")
    if high is not None:
        return max(high, _child_peak)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    own = peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux
    return max(own, _child_peak)


def bound_kernel_cache(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Keep at most ``capacity`` compiled oneDNN kernels (torch's CPU matmuls), unless the
    user's environment already sets ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``.

    Why: oneDNN caches a kernel, with its scratch memory, for every matrix shape it meets, up to
    1024 of them, and training on conversations of varying length meets new shapes at every
    step. The demo's os expert grew from 3.6 to 6.5 GB resident over its 48 steps with the
    default and to 5.3 GB with 128 (peak 6.9 against 5.7 GB, ``docs/results.md``); with no
    cache it stays flat but steps are five times slower, since a step reuses each shape across
    its layers. Step times at 128 and 1024 were within the machine's noise. oneDNN reads the
    variable when it builds its first kernel, so this runs when cycleqd is imported.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
