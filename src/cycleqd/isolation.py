"""One call run in a child process, so that all the memory it used goes back when it ends.

Why: a process that trained a model keeps what training left behind for the rest of its life
(oneDNN's cached kernels with their scratch memory, heap pages glibc cannot hand back), and the
demo's later stages (the merges, the search, the test evaluation) then started over a gigabyte
above what they use (docs/results.md). A child process returns every page to the OS when it
exits. The child is started with ``spawn`` (a fresh interpreter: no copy of the parent's
engine, threads or locks), on TCMalloc where the machine has it (:mod:`cycleqd.allocator`: a
training step 20% faster and its peak lower), and its progress bars are drawn on the parent's
(``RelayProgress``).

The child runs one call and exits through the interpreter's ``atexit`` handlers, so what the
call started (the private MariaDB server, temporary folders) is stopped as in a normal exit;
an exception it raises reaches the caller as the same exception (a ``CycleQDError`` stays a
one-line error).
"""

from __future__ import annotations

import atexit
import multiprocessing
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from rich.progress import Progress, TaskID

from cycleqd.allocator import preloaded, settle
from cycleqd.errors import CycleQDError
from cycleqd.progress import RelayProgress
from cycleqd.resources import note_child_peak, peak_rss_bytes, reset_peak

T = TypeVar("T")

_events: Any = None  # the child's end of the progress queue (set by _start)


def _start(events: Any) -> None:
    """In the child, once: keep the queue the parent's relay reads (a queue reaches a spawned
    child only as an argument of its start, not of a call), and keep the allocator it was
    started on to itself (the programs it starts get their own)."""
    global _events
    _events = events
    settle()


def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[T, int]:
    """In the child: ``fn``'s result and the child's peak resident memory."""
    reset_peak()
    try:
        if kwargs.get("progress") is True:  # the parent has a bar: draw on it
            kwargs = {**kwargs, "progress": RelayProgress(_events)}
        return fn(*args, **kwargs), peak_rss_bytes()
    finally:
        # multiprocessing leaves a child with os._exit, which skips atexit: run the handlers
        # here so a server or temporary folder the call started does not outlive it
        atexit._run_exitfuncs()


def run_in_child(fn: Callable[..., T], *args: Any, bar: Progress | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a spawned child process; its result (which must pickle).

    ``fn`` takes a ``progress`` argument: with ``bar`` given, a :class:`RelayProgress` whose
    bars appear on ``bar`` while the child runs; without, False. The child's peak memory is noted
    (:func:`cycleqd.resources.note_child_peak`) so a stage's peak includes it.
    """
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    done = threading.Event()
    relay = threading.Thread(target=_relay, args=(events, bar, done), daemon=True)
    relay.start()
    try:
        with ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_start, initargs=(events,)
        ) as pool:
            with preloaded():  # the child starts at the submit, on TCMalloc where there is one
                future = pool.submit(_call, fn, args, {**kwargs, "progress": bar is not None})
            result, peak = future.result()
    except BrokenProcessPool as error:
        raise CycleQDError(
            f"{fn.__name__}: its child process ended without an answer (killed by a signal, "
            "perhaps by the out-of-memory killer)"
        ) from error
    finally:
        done.set()
        relay.join()
        events.close()
    note_child_peak(peak)
    return result


def _relay(events: Any, bar: Progress | None, done: threading.Event) -> None:
    """The parent's side: the child's task events applied to ``bar`` until the child is done
    and its queue drained; its tasks still shown at the end are removed."""
    tasks: dict[int, TaskID] = {}
    while True:
        try:
            kind, child_id, fields = events.get(timeout=0.2)
        except queue.Empty:
            if done.is_set():
                break
            continue
        except (EOFError, OSError, ValueError):  # the queue closed under us
            break
        if bar is None:
            continue
        if kind == "add":
            description = fields.pop("description")
            tasks[child_id] = bar.add_task(description, **fields)
        elif child_id in tasks and kind == "update":
            bar.update(tasks[child_id], **fields)
        elif child_id in tasks and kind == "remove":
            bar.remove_task(tasks.pop(child_id))
    if bar is not None:
        for task in tasks.values():
            bar.remove_task(task)
