"""The allocator: the command line restarts itself on TCMalloc, training children are spawned on
it, and neither passes the preload on to the programs they start (the database server, the
sandboxes); ``CYCLEQD_ALLOCATOR=system`` keeps glibc's malloc."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import allocator_report, decommit_report, release_report

from cycleqd import allocator
from cycleqd.isolation import run_in_child

needs_tcmalloc = pytest.mark.skipif(
    allocator.library() is None,
    reason="libtcmalloc-minimal4 is not installed (make test installs it)",
)

# restarts itself as the command line does, then says what it runs on and what it hands on
PROBE = """
import json, os, subprocess
from cycleqd.allocator import in_use, restart_with_preferred
restart_with_preferred()
shell = subprocess.run(["sh", "-c", "echo $LD_PRELOAD"], capture_output=True, text=True)
print(json.dumps({"pid": os.getpid(), "allocator": in_use(),
                  "LD_PRELOAD": os.environ.get("LD_PRELOAD"), "subprocess": shell.stdout.strip()}))
"""


def _probe(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", *env)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**environment, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


@needs_tcmalloc
def test_the_command_line_restarts_on_tcmalloc_and_hands_the_preload_on_to_nothing() -> None:
    report = _probe()
    assert report["allocator"] == "tcmalloc"
    assert report["LD_PRELOAD"] is None
    assert report["subprocess"] == ""


@needs_tcmalloc
def test_a_users_own_preload_is_kept_for_the_programs_it_starts() -> None:
    own = str(allocator.library())  # any library that loads; the user's own, here
    report = _probe(LD_PRELOAD=own)
    assert report["allocator"] == "tcmalloc"
    assert report["LD_PRELOAD"] == own
    assert report["subprocess"] == own


def test_the_system_setting_keeps_glibcs_malloc() -> None:
    report = _probe(CYCLEQD_ALLOCATOR="system")
    assert report["allocator"] == "system"
    assert report["LD_PRELOAD"] is None


@needs_tcmalloc
def test_a_training_child_runs_on_tcmalloc_and_the_parents_environment_is_unchanged() -> None:
    before = dict(os.environ)
    report = run_in_child(allocator_report)
    assert report["pid"] != os.getpid()
    assert report["allocator"] == "tcmalloc"
    # the programs the child starts (its database server, sandboxes) get the parent's own
    # preload (vLLM's CPU platform sets one for libgomp once imported), never TCMalloc
    assert report["LD_PRELOAD"] == before.get("LD_PRELOAD")
    assert dict(os.environ) == before


@needs_tcmalloc
def test_a_preload_the_parent_already_has_reaches_the_childs_programs_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = str(allocator.library())  # any library that loads; the parent's own, here
    monkeypatch.setenv("LD_PRELOAD", own)
    report = run_in_child(allocator_report)
    assert report["allocator"] == "tcmalloc"
    assert report["LD_PRELOAD"] == own
    assert os.environ["LD_PRELOAD"] == own


def test_with_the_system_setting_a_child_runs_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.SETTING, "system")
    assert run_in_child(allocator_report)["allocator"] == "system"


@needs_tcmalloc
def test_tcmallocs_free_memory_goes_back_to_the_os_when_released() -> None:
    report = run_in_child(release_report)
    assert report["allocator"] == "tcmalloc"
    # TCMalloc keeps the 256 freed MiB for reuse until asked to hand them back
    assert report["after_free"] - report["before"] > 200 * 2**20
    assert report["after_release"] - report["before"] < 50 * 2**20


@needs_tcmalloc
def test_inside_returning_freed_memory_tcmalloc_hands_freed_blocks_back_at_once() -> None:
    report = run_in_child(decommit_report)
    assert report["allocator"] == "tcmalloc"
    assert report["inside"] - report["before"] < 50 * 2**20  # no release call needed
    assert report["after"] == 0  # TCMalloc's default again after the block
