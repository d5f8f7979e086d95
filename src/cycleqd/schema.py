"""The pydantic base every config section and operator parameter model shares, and its errors.

Kept apart from :mod:`cycleqd.config` so that modules the config validates against (the search
operators, the tasks) can define their own parameter models without importing the config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are rejected, values are validated on assignment.

    Strict because a misspelt key silently falling back to a default is the most expensive kind
    of bug in a search that runs for days.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming the first offending key path, e.g. ``search.generations: ...``."""
    first = err.errors()[0]
    parts = [*(prefix.split(".") if prefix else []), *(str(p) for p in first["loc"])]
    inner = (first.get("ctx") or {}).get("path")  # a key inside an operator's parameters
    if first["type"] == "operator" and inner:
        parts.append(str(inner))
    loc = ".".join(parts)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc or '<root>'}: {msg}{extra}"
