"""The search's operators, by name (see :mod:`cycleqd.search.operators.base`).

Every module of this package is imported here, so an operator registers itself by being in a
module of the package: adding one touches no other file.
"""

from __future__ import annotations

import importlib
import pkgutil

from cycleqd.search.operators.base import (
    CROSSOVERS,
    FINAL_MERGES,
    MUTATIONS,
    SAMPLERS,
    Breeding,
    Choice,
    Finishing,
    Operator,
    choice_type,
    operator,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "CROSSOVERS",
    "FINAL_MERGES",
    "MUTATIONS",
    "SAMPLERS",
    "Breeding",
    "Choice",
    "Finishing",
    "Operator",
    "choice_type",
    "operator",
]
