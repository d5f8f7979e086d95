"""The one registry type: names are unique, unknown names list the known ones."""

from __future__ import annotations

import pytest

from cycleqd.errors import CycleQDError
from cycleqd.registry import Registry
from cycleqd.search.operators import CROSSOVERS, FINAL_MERGES, MUTATIONS, SAMPLERS
from cycleqd.tasks.base import TASKS
from cycleqd.tasks.checks import CHECKERS
from cycleqd.tasks.suites import SUITES


def first() -> None: ...


def second() -> None: ...


def test_a_duplicate_name_is_refused_naming_both_owners() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add("a", first)
    with pytest.raises(ValueError, match=r"widget 'a' is registered twice.*first.*second"):
        reg.add("a", second)
    assert reg.get("a") is first  # the first registration stands


def test_an_unknown_name_lists_the_known() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b")(2)
    reg.add("a", 1)
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    with pytest.raises(CycleQDError, match=r"unknown widget 'c' \(known: a, b\)"):
        reg.get("c")


def test_every_registry_of_the_package_is_one() -> None:
    # tasks, data checkers, suites and the four operator families share the type
    for reg in (TASKS, CHECKERS, SUITES, SAMPLERS, CROSSOVERS, MUTATIONS, FINAL_MERGES):
        assert isinstance(reg, Registry) and len(reg) > 0
    assert {"code", "agentbench-os", "dbbench", "multiple_choice"} <= set(TASKS.names())
    assert SUITES.names() == ["code-mini", "db-mini", "os-mini"]
    assert SAMPLERS.names() == ["elite", "random"]
    assert CROSSOVERS.names() == ["linear", "per_expert"]
    assert MUTATIONS.names() == ["gaussian", "none", "svd"]
    assert FINAL_MERGES.names() == ["assemble", "softmax", "ties"]
