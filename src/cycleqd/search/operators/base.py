"""Search operators by name: what a config's ``kind:`` picks, and the contexts they run in.

Every operator of the loop (parent sampler, crossover, mutation, final merge) is a plain
function registered under a name with its own pydantic parameter model, as mergekit registers
merge methods. A config section names one (``mutation: {kind: svd, w_max: 0.1}``; a bare
string is the kind with default parameters) and is validated against that operator's own model,
so an operator's settings live in one place: its module. Adding an operator is one new module
in this package (it is found and imported by :mod:`cycleqd.search.operators`) plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Combine, Genome
from cycleqd.registry import Registry
from cycleqd.schema import StrictModel
from cycleqd.search.archive import Elite

F = TypeVar("F")


class NoParams(StrictModel):
    """The parameters of an operator that has none."""


@dataclass(frozen=True)
class Operator(Generic[F]):
    """A registered operator: its name, its parameter model and the function that runs it."""

    name: str
    params: type[BaseModel]
    fn: F


@dataclass(frozen=True)
class Breeding:
    """What crossover and mutation may read beside their genomes and random stream.

    ``expert``: the index of the expert whose task's archive is active (the cycle's ``q``).
    """

    basis: ExpertBasis
    expert: int


@dataclass(frozen=True)
class Finishing:
    """What a final merge may read: the bases, each archive's expert and the genome space.

    ``task_experts[t]``: the expert archive ``t`` serves. ``combine``/``combine_density``: how a
    genome's expert parts form its task vector (``basis.combine``, ``basis.density``).
    ``load``: a stored individual's genome by id.
    """

    basis: ExpertBasis
    task_experts: Sequence[int]
    load: Callable[[str], Genome]
    combine: Combine = "sum"
    combine_density: float = 0.5


class SamplerFn(Protocol):
    def __call__(
        self, elites: list[Elite], rng: np.random.Generator, params: Any
    ) -> tuple[Elite, Elite]: ...


class CrossoverFn(Protocol):
    def __call__(
        self, parent1: Genome, parent2: Genome, rng: torch.Generator, params: Any, ctx: Breeding
    ) -> tuple[Genome, dict[str, tuple[float, float]]]: ...


class MutationFn(Protocol):
    def __call__(
        self, child: Genome, rng: torch.Generator, params: Any, ctx: Breeding
    ) -> Genome: ...


class FinalMergeFn(Protocol):
    """Returns the final genome and the merge weights to record (None where it has none)."""

    def __call__(
        self, bests: list[Elite], params: Any, ctx: Finishing
    ) -> tuple[Genome, list[float] | None]: ...


SAMPLERS: Registry[Operator[SamplerFn]] = Registry("sampler")
CROSSOVERS: Registry[Operator[CrossoverFn]] = Registry("crossover")
MUTATIONS: Registry[Operator[MutationFn]] = Registry("mutation")
FINAL_MERGES: Registry[Operator[FinalMergeFn]] = Registry("final merge")


def operator(
    registry: Registry[Operator[Any]], name: str, params: type[BaseModel] = NoParams
) -> Callable[[F], F]:
    """Register the decorated function in ``registry`` as ``name`` with ``params``."""

    def wrap(fn: F) -> F:
        registry.add(name, Operator(name, params, fn))
        return fn

    return wrap


@dataclass(frozen=True)
class Choice:
    """A config's choice of one operator: its ``kind`` and its validated parameters."""

    kind: str
    params: BaseModel

    def dump(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params.model_dump(mode="json")}


def _parse(registry: Registry[Operator[Any]], default: str, value: Any) -> Choice:
    if isinstance(value, Choice):
        return value
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "operator", "expected a {what} name or a mapping with 'kind'", {"what": registry.what}
        )
    data = dict(value)
    kind = data.pop("kind", default)
    if kind not in registry:
        raise PydanticCustomError(
            "operator", "{msg}", {"msg": registry.unknown(str(kind)), "path": "kind"}
        )
    op = registry.get(kind)
    try:
        params = op.params.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        keys = ", ".join(op.params.model_fields) or "no parameters"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise PydanticCustomError(
            "operator",
            "{msg}",
            {
                "msg": f"{msg} ({registry.what} {kind!r} takes: {keys})",
                "path": ".".join(str(p) for p in first["loc"]),
            },
        ) from err
    return Choice(kind, params)


@dataclass(frozen=True)
class _ChoiceSchema:
    """The JSON schema of an operator field, made when the schema is asked for (so every
    operator registered by then is in it): the kind's name alone, or one object per kind with
    that operator's own parameters."""

    registry: Registry[Operator[Any]]
    default: str

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        kinds = []
        for name in self.registry.names():
            params = self.registry.get(name).params.model_json_schema()
            kinds.append(
                {
                    "title": name,
                    "type": "object",
                    "properties": {"kind": {"const": name}, **params.get("properties", {})},
                    "additionalProperties": False,
                }
            )
        return {
            "description": f"a {self.registry.what} (default {self.default!r}): its name, or "
            "{kind: name, ...its parameters}",
            "anyOf": [{"enum": self.registry.names()}, *kinds],
        }


def choice_type(registry: Registry[Operator[Any]], default: str) -> Any:
    """The annotated type of a config field that names one operator of ``registry``; a field of
    this type defaults to ``default`` with its default parameters."""
    return Annotated[
        Choice,
        BeforeValidator(lambda value: _parse(registry, default, value)),
        PlainSerializer(lambda choice: choice.dump()),
        _ChoiceSchema(registry, default),
        Field(default_factory=lambda: _parse(registry, default, default)),
    ]
