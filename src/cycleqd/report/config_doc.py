"""The configuration reference (``docs/config.md``), generated from the config's pydantic models.

Every key, its type, bounds, default and description come from :class:`cycleqd.config.RunConfig`
and the operator registries, so the reference cannot drift from what ``cycleqd run`` accepts: a
test regenerates it and fails when the committed file differs. Regenerate with::

    python -m cycleqd.report.config_doc > docs/config.md
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cycleqd.config import RunConfig
from cycleqd.registry import Registry
from cycleqd.search.operators import CROSSOVERS, FINAL_MERGES, MUTATIONS, SAMPLERS, Choice
from cycleqd.search.operators.base import Operator

OPERATORS: dict[str, Registry[Operator[Any]]] = {
    "search.sampler": SAMPLERS,
    "search.crossover": CROSSOVERS,
    "search.mutation": MUTATIONS,
    "search.final_merge": FINAL_MERGES,
}
HEADER = """# Configuration reference

Generated from the config's pydantic models by `python -m cycleqd.report.config_doc >
docs/config.md` (a test fails when this file is stale). Keys are YAML paths of a run config
(`cycleqd run CONFIG`); any of them can be set on the command line with `--set path=value`.
Unknown keys are errors naming the key path.
"""


def _type(annotation: Any) -> str:
    """A short, readable type: ``int``, ``float | null``, ``svd | tsv``, ``list of TaskConfig``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if origin is typing.Annotated:
        return _type(args[0])
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for kind, attr, sign in (
            (Ge, "ge", ">="),
            (Gt, "gt", ">"),
            (Le, "le", "<="),
            (Lt, "lt", "<"),
        ):
            if isinstance(meta, kind):
                parts.append(f"{sign} {getattr(meta, attr)}")
    return f" ({', '.join(parts)})" if parts else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, Choice):
        return f"`{value.kind}`"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value, default=str)}`"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    """A table of ``model``'s keys, then one table per nested section, list item or operator."""
    title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    out += ["", f"## {title}", "", doc, "", "| key | type | default | description |"]
    out.append("|---|---|---|---|")
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if path in OPERATORS:
            kind = "operator: " + ", ".join(OPERATORS[path].names())
        else:
            kind = _type(annotation) + _bounds(field)
        out.append(f"| `{path}` | {kind} | {_default(field)} | {_cell(field.description)} |")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, f"{path}."))
        elif isinstance(item, type) and issubclass(item, BaseModel):
            nested.append((item, f"{path}.N."))
    for path, registry in OPERATORS.items():
        if path.startswith(prefix) and path.count(".") == prefix.count(".") and prefix:
            _operators(path, registry, out)
    for sub, sub_prefix in nested:
        _section(sub, sub_prefix, out)


def _operators(path: str, registry: Registry[Operator[Any]], out: list[str]) -> None:
    """The kinds of one operator field and each kind's own parameters."""
    out += ["", f"### `{path}`: {registry.what} kinds", ""]
    out += [
        f"`{path}: NAME` or `{path}: {{kind: NAME, ...parameters}}`; each kind takes only its "
        "own parameters.",
        "",
        "| kind | parameter | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for name in registry.names():
        op = registry.get(name)
        doc = _cell(" ".join((op.fn.__doc__ or "").strip().split("\n\n")[0].split()))
        out.append(f"| `{name}` | | | | {doc} |")
        for param, field in op.params.model_fields.items():
            kind = _type(field.annotation) + _bounds(field)
            text = _cell(field.description)
            out.append(f"| | `{param}` | {kind} | {_default(field)} | {text} |")


def render() -> str:
    """The whole reference as markdown."""
    out = [HEADER.rstrip()]
    _section(RunConfig, "", out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
