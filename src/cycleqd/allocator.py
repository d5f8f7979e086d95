"""The memory allocator under torch and vLLM: TCMalloc where the machine has it, else glibc's.

Why: on a CPU, a training step or a vLLM scoring call allocates and frees hundreds of tensors of
a few megabytes. glibc's malloc keeps those freed chunks in fragmented arenas, so a process's
resident memory runs far above what it holds live, and each new chunk costs it more work.
TCMalloc reuses them: on the demo's own work, training steps ran about 20% faster and the
language column 10%, each peaking 0.3 to 0.4 GB lower, with the same bits computed
(docs/results.md). vLLM's CPU guide and PyTorch's CPU launcher
(``torch.backends.xeon.run_cpu``) preload it for the same reason.

An allocator cannot be swapped in a running process: it must be preloaded (``LD_PRELOAD``)
before the interpreter starts. So the command line starts itself once more with it
(:func:`restart_with_preferred`), and the training children are spawned with it
(:func:`preloaded`). Neither hands ``LD_PRELOAD`` on to other programs (the database server, the
sandboxes): :func:`settle` takes it back out of the environment once the process runs on it.

``CYCLEQD_ALLOCATOR=system`` keeps glibc's malloc. Without the library (Debian's
``libtcmalloc-minimal4``, which ``make`` installs) everything runs on glibc as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

SETTING = "CYCLEQD_ALLOCATOR"  # "tcmalloc" (the default) or "system"
# set by the restart to "<pid>:<LD_PRELOAD before it>": the restarted process (same pid after
# exec) knows it was restarted, and puts the user's own LD_PRELOAD back
_MARK = "CYCLEQD_PRELOADED"
_LIBRARY = "libtcmalloc_minimal.so.4"
_DIRECTORIES = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
# TCMalloc reports every allocation over 1 GB on stderr (vLLM's KV cache is one); not an error
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def wanted() -> bool:
    """Whether the settings ask for TCMalloc (the default) rather than the system's malloc."""
    return os.environ.get(SETTING, "tcmalloc").strip().lower() != "system"


@cache
def library() -> Path | None:
    """TCMalloc's shared library on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return None
    for directory in _DIRECTORIES:
        path = Path(directory) / _LIBRARY
        if path.is_file():
            return path
    found = ctypes.util.find_library("tcmalloc_minimal")
    return Path(found) if found and Path(found).is_absolute() else None


def in_use() -> str:
    """``"tcmalloc"`` when this process allocates with TCMalloc, else ``"system"``."""
    return "tcmalloc" if _release_function() is not None else "system"


@cache
def _release_function() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        return ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand the allocator's free memory back to the OS (TCMalloc's release, glibc's
    ``malloc_trim``; nothing elsewhere)."""
    release = _release_function()
    if release is not None:
        release()
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``malloc_trim``, looked up once: ``find_library`` runs ``ldconfig``, and on glibc
    the training loop trims after every step."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def _with_library(value: str | None, path: Path) -> str:
    return f"{path}:{value}" if value else str(path)


def restart_with_preferred() -> None:
    """Start this command again with TCMalloc preloaded, when it is wanted, on the machine and
    not yet in use; returns (doing nothing) otherwise. Call it first thing, before the heavy
    imports, with nothing started that the restart would lose."""
    mark = os.environ.get(_MARK)
    if mark is not None and mark.split(":", 1)[0] == str(os.getpid()):
        settle()
        return
    path = library()
    if not wanted() or path is None or in_use() == "tcmalloc":
        return
    previous = os.environ.get("LD_PRELOAD", "")
    env = {**os.environ, **_QUIET, _MARK: f"{os.getpid()}:{previous}"}
    env["LD_PRELOAD"] = _with_library(previous, path)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # the interpreter cannot be started again: go on with glibc's malloc
        return


def settle() -> None:
    """Take the preload back out of this process's environment (it stays loaded here), so the
    programs it starts run on their own allocator."""
    mark = os.environ.pop(_MARK, None)
    if mark is None:
        return
    previous = mark.split(":", 1)[1] if ":" in mark else ""
    if previous:
        os.environ["LD_PRELOAD"] = previous
    else:
        os.environ.pop("LD_PRELOAD", None)


@contextmanager
def preloaded() -> Iterator[None]:
    """Python processes started inside this block run on TCMalloc (when wanted and on the
    machine); the child calls :func:`settle` first thing."""
    path = library()
    if not wanted() or path is None:
        yield
        return
    saved = {key: os.environ.get(key) for key in ("LD_PRELOAD", _MARK, *_QUIET)}
    previous = os.environ.get("LD_PRELOAD", "")
    os.environ.update(_QUIET)
    os.environ["LD_PRELOAD"] = _with_library(previous, path)
    os.environ[_MARK] = f"child:{previous}"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_DECOMMIT = b"tcmalloc.aggressive_memory_decommit"


@contextmanager
def returning_freed_memory() -> Iterator[None]:
    """Inside the block TCMalloc hands memory back to the OS as soon as it is freed (its
    ``aggressive_memory_decommit``), as glibc does for large blocks; nothing on glibc.

    For work that frees large tensors it will not reuse, such as a merge (mergekit loads,
    combines and writes each tensor once): TCMalloc keeps them for reuse otherwise, and the
    demo's four merges peaked at 4.15 GB against 3.35 GB with this (docs/results.md). Training
    and scoring reuse their blocks step after step, so they run without it.
    """
    if in_use() != "tcmalloc":
        yield
        return
    library = ctypes.CDLL(None)
    previous = ctypes.c_size_t(0)
    known = library.MallocExtension_GetNumericProperty(_DECOMMIT, ctypes.byref(previous))
    library.MallocExtension_SetNumericProperty(_DECOMMIT, ctypes.c_size_t(1))
    try:
        yield
    finally:
        library.MallocExtension_SetNumericProperty(
            _DECOMMIT, previous if known else ctypes.c_size_t(0)
        )
        release_free_memory()
