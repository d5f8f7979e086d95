"""Run one task for several models in lockstep, their engine calls merged into shared batches.

A population of children evaluated on one resident model (see
:mod:`cycleqd.merging.population`) must put the rows of all children into the same forward
passes. Tasks are written for one model: ``task.evaluate(engine)`` calls ``engine.generate`` (an
agent task once per round) and acts on the replies. So each child's evaluation runs in its own
thread with a view of the engine; a view's ``generate`` parks its request until every child still
evaluating has parked one (or finished), then one combined call answers all of them, each row
tagged with its child. Tasks need no change, agent episodes of all children advance round by
round together, and environments of different children act concurrently.

The combined call orders requests by child index, never by arrival, so the batches (and hence
the numbers) do not depend on thread timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_MERGED = ("generate", "target_likelihood", "loglikelihood")


@dataclass
class _Request:
    method: str
    args: tuple[Sequence[Any], ...]  # per-row sequences: prompts (and targets)
    kwargs: dict[str, Any]


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a keyword value, so requests with equal settings merge."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


class LockstepEngine:
    """Merges the engine calls of ``n`` concurrent single-model evaluations.

    Args:
        engine: the resident engine; its ``generate``, ``target_likelihood`` and
            ``loglikelihood`` take ``groups``.
        n: how many views (children) take part.
    """

    def __init__(self, engine: Any, n: int) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._active = set(range(n))
        self._pending: dict[int, _Request] = {}
        self._answers: dict[int, tuple[bool, Any]] = {}
        self.calls = 0  # combined engine calls made (for logs and tests)

    def view(self, group: int) -> _EngineView:
        return _EngineView(self, group)

    def request(self, group: int, req: _Request) -> Any:
        with self._cond:
            self._pending[group] = req
            self._flush_if_ready()
            while group not in self._answers:
                self._cond.wait()
            ok, value = self._answers.pop(group)
        if not ok:
            raise value
        return value

    def finish(self, group: int) -> None:
        """``group``'s evaluation returned (or failed): stop waiting for its requests."""
        with self._cond:
            self._active.discard(group)
            self._flush_if_ready()

    def _flush_if_ready(self) -> None:
        """Answer every parked request once no active view is still computing.

        Runs under the lock: every other active view is parked, so nothing waits on it.
        """
        if not self._pending or len(self._pending) < len(self._active):
            return
        pending, self._pending = self._pending, {}
        buckets: dict[Any, list[int]] = {}
        for group in sorted(pending):
            req = pending[group]
            key = (req.method, tuple(sorted((k, _freeze(v)) for k, v in req.kwargs.items())))
            buckets.setdefault(key, []).append(group)
        for groups in buckets.values():
            first = pending[groups[0]]
            columns = [
                [x for g in groups for x in pending[g].args[i]] for i in range(len(first.args))
            ]
            row_groups = [g for g in groups for _ in pending[g].args[0]]
            try:
                method: Callable[..., list[Any]] = getattr(self.engine, first.method)
                out = method(*columns, groups=row_groups, **first.kwargs)
                self.calls += 1
            except BaseException as exc:  # every waiting view re-raises it
                for g in groups:
                    self._answers[g] = (False, exc)
                continue
            at = 0
            for g in groups:
                n = len(pending[g].args[0])
                self._answers[g] = (True, out[at : at + n])
                at += n
        self._cond.notify_all()


class _EngineView:
    """What one child's task sees: the engine, its scoring and generating calls merged."""

    def __init__(self, hub: LockstepEngine, group: int) -> None:
        self._hub = hub
        self._group = group

    def generate(self, prompts: Sequence[Any], **kwargs: Any) -> list[str]:
        return self._ask("generate", prompts, **kwargs)

    def target_likelihood(
        self, prompts: Sequence[Any], targets: Sequence[str], **kwargs: Any
    ) -> list[float]:
        return self._ask("target_likelihood", prompts, targets, **kwargs)

    def loglikelihood(
        self, contexts: Sequence[str], continuations: Sequence[str], **kwargs: Any
    ) -> list[float]:
        return self._ask("loglikelihood", contexts, continuations, **kwargs)

    def _ask(self, method: str, *columns: Sequence[Any], **kwargs: Any) -> Any:
        """Park one merged call (per-row ``columns``) until the hub answers it."""
        if not columns[0]:
            return []
        req = _Request(method, tuple(list(c) for c in columns), kwargs)
        return self._hub.request(self._group, req)

    def __getattr__(self, name: str) -> Any:
        # tokenizer, format(), device...: read-only helpers of the engine pass straight through
        if name in _MERGED:
            raise AttributeError(name)
        return getattr(self._hub.engine, name)


def run_lockstep(engine: Any, n: int, body: Callable[[Any, int], Any]) -> list[Any]:
    """``[body(view_i, i) for i in range(n)]``, run concurrently with merged engine calls.

    An exception in any body is re-raised (the first by index) once every thread has ended.
    """
    hub = LockstepEngine(engine, n)
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n

    def work(i: int) -> None:
        try:
            results[i] = body(hub.view(i), i)
        except BaseException as exc:
            errors[i] = exc
        finally:
            hub.finish(i)

    threads = [threading.Thread(target=work, args=(i,), name=f"lockstep-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for exc in errors:
        if exc is not None:
            raise exc
    return results
