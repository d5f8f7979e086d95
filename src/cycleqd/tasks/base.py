"""The contract between the search and the tasks.

The search only knows that a task has a name and turns an engine (whatever holds the resident
model) into a :class:`TaskResult` whose quality lies in [0, 1]. What a language task may ask of
its engine is written down here too (:class:`LanguageEngine`), so a new engine (vLLM, say) knows
exactly what to implement, and tasks call it without probing for attributes. Tasks never import
the search and the search never imports a concrete task; concrete tasks reach the CLI through the
registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from cycleqd.errors import CycleQDError
from cycleqd.registry import Registry
from cycleqd.schema import format_validation_error


@dataclass
class TaskResult:
    """A task's score for one model, with per-sample records (prompts, outputs, verdicts)."""

    quality: float
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality <= 1.0:
            raise ValueError(f"task quality must lie in [0, 1], got {self.quality}")


Prompt = str | list[dict[str, str]]  # a user message, or a chat as role/content messages


@runtime_checkable
class LanguageEngine(Protocol):
    """What a language task may ask of the engine that holds the model being scored.

    All decoding is greedy, so an engine's answer is a function of the weights and the tokens.
    ``groups`` (one per prompt or pair) serves a population of children that share forward
    passes: group ``g``'s rows are answered by child ``g``; without it one model answers all.
    :class:`cycleqd.models.engine.HFEngine` implements it; so does every engine a task is given
    (the lockstep views of :mod:`cycleqd.models.lockstep` included).
    """

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        chat: bool = True,
        until: Callable[[str], bool] | None = None,
        groups: Sequence[int] | None = None,
    ) -> list[str]:
        """Greedy completions in the order of ``prompts``, each cut before its first stop
        string, and ended as soon as ``until(text so far)`` holds (the text kept whole)."""
        ...

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        """Summed ``log p(continuation | context)`` per pair, in lm-eval's convention."""
        ...

    def target_likelihood(
        self,
        prompts: Sequence[Prompt],
        targets: Sequence[str],
        *,
        chat: bool = False,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        """Per pair ``exp(mean log p(target tokens | prompt))``."""
        ...


@runtime_checkable
class Task(Protocol):
    """Anything that scores the model currently held by an engine.

    The engine is whatever the task's family needs: language tasks take a
    :class:`LanguageEngine`; a vision or toy task takes its own model holder.
    """

    name: str

    def evaluate(self, engine: Any) -> TaskResult: ...


TaskFactory = Callable[[str, BaseModel], Task]
TASKS: Registry[tuple[type[BaseModel], TaskFactory]] = Registry("task type")


def register_task(type_name: str, params: type[BaseModel]) -> Callable[[TaskFactory], TaskFactory]:
    """Make a task type available to configs as ``type: <type_name>``."""

    def wrap(factory: TaskFactory) -> TaskFactory:
        TASKS.add(type_name, (params, factory))
        return factory

    return wrap


def task_types() -> list[str]:
    return TASKS.names()


def build_task(name: str, type_name: str, params: dict[str, Any], where: str) -> Task:
    """Instantiate a task from its config entry; ``where`` is the key path used in errors."""
    if type_name not in TASKS:
        raise CycleQDError(f"config error: {where}.type: {TASKS.unknown(type_name)}")
    model, factory = TASKS.get(type_name)
    try:
        parsed = model.model_validate(params)
    except ValidationError as err:
        raise CycleQDError(
            f"config error: {format_validation_error(err, f'{where}.params')}"
        ) from err
    return factory(name, parsed)
