"""The contract between the search and the tasks.

The search only knows that a task has a name and turns an engine (whatever holds the resident
model) into a :class:`TaskResult` whose quality lies in [0, 1]. Tasks never import the search and
the search never imports a concrete task; concrete tasks reach the CLI through the registry.
"""

from __future__ import annotations

from collections.abc import Callable
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


@runtime_checkable
class Task(Protocol):
    """Anything that scores the model currently held by an engine."""

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
