"""AgentBench's OS execution model, sample by sample (docs/os-execution-model.md).

AgentBench v0.2 runs ``create.init`` and every check script as independent ``docker exec``
processes (``bash -c`` / ``python3 -c``, cwd ``/``, the container's environment), and ``start`` and
the agent's commands in one persistent ``bash --login`` on a terminal. The samples here are our
own, in AgentBench's file format (``agentbench_format/``: ``data/<group>/*.json`` and
``scripts/<group>/``; group 2 is all ``match`` and has no scripts folder, as such groups upstream).
Each test states what AgentBench does with the sample and checks that a real episode does the same.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from cycleqd.errors import CycleQDError
from cycleqd.tasks.agent import replay
from cycleqd.tasks.checks import CheckOptions, get_checker
from cycleqd.tasks.os.data import OSSample, default_scripts_dir, load_samples, parse_sample
from cycleqd.tasks.os.environment import EnvironmentOptions
from cycleqd.tasks.os.episode import OSEpisode
from cycleqd.tasks.os.reference import answer_turn, bash_turn

FORMAT = Path(__file__).with_name("agentbench_format")
GROUP_1 = FORMAT / "data" / "1" / "execution-model.json"
GROUP_2 = FORMAT / "data" / "2" / "match-only.json"
INTEGER_MATCH = {"language": "python", "file": "check/integer-match.py"}


def _group_1() -> list[OSSample]:
    return load_samples(GROUP_1)


def _shell_outputs(
    sample: OSSample, rootfs: Path, commands: list[str], **options: Any
) -> list[str]:
    """What the agent's shell prints for each command after the sample's init and start."""
    episode = OSEpisode(sample, rootfs, EnvironmentOptions(**options))
    try:
        episode.reset()
        assert episode.env is not None
        return [episode.env.run(c).output for c in commands]
    finally:
        episode.close()


def _play(sample: OSSample, rootfs: Path, command: str, answer: str | None = None) -> Any:
    """One bash turn, then answer with ``answer`` (default: that command's output)."""
    episode = OSEpisode(sample, rootfs)
    try:
        episode.reset()
        obs = episode.step(bash_turn(command))
        assert obs is not None
        final = episode.last_output.strip() if answer is None else answer
        episode.step(answer_turn(final))
        score, details = episode.grade()
        return score, details, final
    finally:
        episode.close()


# -- data files and their scripts folders ----------------------------------------------------------


def test_own_samples_pass_data_check_as_they_do_in_agentbench(rootfs: Path) -> None:
    check = get_checker("agentbench-os")
    assert default_scripts_dir(GROUP_1) == FORMAT / "scripts" / "1"  # data/<n>/ -> scripts/<n>/
    outcomes = list(check(GROUP_1, CheckOptions(workers=2)))
    assert [(o.sample_id, o.status) for o in outcomes if o.status != "passed"] == []
    assert len(outcomes) == 8
    # A group of match samples has no scripts folder: neither inferred nor given is an error.
    assert default_scripts_dir(GROUP_2) is None
    for scripts in (None, FORMAT / "scripts" / "2"):
        outcomes = list(check(GROUP_2, CheckOptions(scripts=scripts, workers=2)))
        assert [o.status for o in outcomes] == ["passed", "passed"]


def test_only_a_sample_that_names_a_script_needs_the_folder(tmp_path: Path) -> None:
    group = tmp_path / "data" / "3"
    group.mkdir(parents=True)
    items = [
        {"description": "d", "evaluation": {"match": "x"}},
        {"description": "d", "evaluation": {"check": [None, INTEGER_MATCH], "example": "nproc"}},
    ]
    (group / "mixed.json").write_text(json.dumps(items))
    for scripts in (None, tmp_path / "scripts" / "3"):
        needs = r"mixed-00001.*check\[1\].*'check/integer-match.py'"
        with pytest.raises(CycleQDError, match=needs):
            load_samples(group / "mixed.json", scripts)
    assert len(load_samples(group / "mixed.json", limit=1)) == 1


def test_init_from_a_file_is_the_same_script_as_inline_code() -> None:
    inline, from_file = _group_1()[0], _group_1()[1]
    text = (FORMAT / "scripts" / "1" / "init" / "target.sh").read_text()
    assert from_file.init[0].language == "bash" and from_file.init[0].code == text
    assert inline.init[0].language == "bash" and "export TARGET_DIR" in inline.init[0].code


# -- where init, start, commands and checks run ----------------------------------------------------


def test_init_exports_and_cd_reach_neither_the_shell_nor_the_checks(rootfs: Path) -> None:
    """AgentBench: init is ``docker exec bash -c``; its export and cd end with that process."""
    inline, from_file = _group_1()[0], _group_1()[1]
    for sample in (inline, from_file):
        out = _shell_outputs(sample, rootfs, ['echo "[$TARGET_DIR]"; pwd; ls /root/target'])
        assert out == ["[]\n/\na\nb\n"]
    # The intended answer (2 entries) fails: the check re-runs `ls -A $TARGET_DIR` with no
    # TARGET_DIR, from /, and counts /. The example typed into the shell counts / as well.
    root_entries = _shell_outputs(inline, rootfs, ["ls -A / | wc -l"])[0].strip()
    score, details, _ = _play(inline, rootfs, "ls /root/target", answer="2")
    assert score == 0.0 and details["steps"][0]["output"].strip() == root_entries
    score, details, answer = _play(inline, rootfs, "ls -A $TARGET_DIR | wc -l")
    assert score == 1.0 and answer == root_entries
    assert ".dockerenv" in _shell_outputs(inline, rootfs, ["ls -A /"])[0].split()


def test_start_is_typed_into_the_shell_and_checks_run_beside_it(rootfs: Path) -> None:
    mode, su = _group_1()[2], _group_1()[3]
    assert _shell_outputs(mode, rootfs, ['echo "$MODE"; pwd']) == ["fast\n/srv/work\n"]
    # su - alice reads the terminal, so what is typed next runs in alice's login shell.
    out = _shell_outputs(su, rootfs, ["id -un; pwd; echo ~", "id -un"])
    assert out == ["alice\n/home/alice\n/home/alice\n", "alice\n"]
    score, _, answer = _play(su, rootfs, 'echo "$(id -un) $(pwd)"')
    assert (score, answer) == (1.0, "alice /home/alice")  # its check asserts it runs as root


def test_environment_of_the_shell_and_of_the_scripts(rootfs: Path) -> None:
    """``docker exec`` gives PATH, HOSTNAME, HOME; the shell's exec has a terminal, so TERM."""
    check = {
        "language": "bash",
        "code": '[ "$PWD" = / ] && [ "$HOME" = /root ] && [ -z "$(printenv TERM LANG)" ] && '
        '[ "$HOSTNAME" = "$(hostname)" ] && [ "$1" = "xterm / /root" ]',
    }
    item = {"description": "d", "evaluation": {"check": [check], "example": "true"}}
    sample = parse_sample(item, 0, "env-", None, "env")
    shell = _shell_outputs(
        sample, rootfs, ['echo "${LANG-unset}"; tr "\\0" " " </proc/1/cmdline', "ulimit -n"]
    )
    assert shell[0] == "unset\nbash "  # PID 1 is the image's CMD, bash, as in the container
    # Docker's open-files limit where we may raise it (CAP_SYS_RESOURCE), else the host's.
    cap_eff = next(x for x in Path("/proc/self/status").read_text().splitlines() if "CapEff" in x)
    can_raise = bool(int(cap_eff.split()[1], 16) >> 24 & 1)
    expected = min(1 << 20, int(Path("/proc/sys/fs/nr_open").read_text()))
    host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert int(shell[1]) == (expected if can_raise else host_hard)
    score, _, answer = _play(sample, rootfs, 'echo "$TERM $PWD $HOME"')
    assert (score, answer) == (1.0, "xterm / /root")


# -- the process tree a count sees -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "example", "in_shell", "in_check"),
    [
        # header, PID 1 bash, the agent's shell, 3 sleeps, ps, wc; the check adds its bash -c.
        ("for i in 1 2 3; do sleep 600 >/dev/null 2>&1 & done", "ps -A | wc -l", 8, 9),
        # header, PID 1, shell, $(...) subshell, ps, wc (who: nobody); plus the check's bash -c.
        (
            "true",
            "process_count=$(ps -e | wc -l)\nlogged_in=$(who | wc -l)\n"
            "echo $((process_count + logged_in))",
            6,
            7,
        ),
    ],
)
def test_process_counts_see_what_agentbench_sees(
    rootfs: Path, init: str, example: str, in_shell: int, in_check: int
) -> None:
    """``check: [null, integer-match]`` re-runs the example as one more process, as in AgentBench.

    So the example's output in the agent's shell is one short of what the check expects there
    too; an answer that counts the way the check does (``bash -c``) passes.
    """
    item = {
        "description": "How many processes are running?",
        "create": {"init": init},
        "evaluation": {"check": [None, INTEGER_MATCH], "example": example},
    }
    sample = parse_sample(item, 0, "count-", FORMAT / "scripts" / "1", "count")
    score, details, answer = _play(sample, rootfs, example)
    assert (score, answer, details["steps"][0]["output"]) == (0.0, str(in_shell), f"{in_check}\n")
    quoted = example.replace("'", "'\\''")
    score, _, answer = _play(sample, rootfs, f"bash -c '{quoted}'")
    assert (score, answer) == (1.0, str(in_check))


def test_init_waits_for_what_holds_its_output_and_leaves_no_zombie(rootfs: Path) -> None:
    """docker exec returns when the output closes: init's sleeps are gone before the agent acts.

    Our scripts have a time limit AgentBench lacks; past it the holders are killed and reaped
    before init returns, so a count right after sees no zombie either.
    """
    waited = _group_1()[5]  # (sleep 2) & twice, no redirection
    assert _shell_outputs(waited, rootfs, ["ps -A --no-headers | wc -l"]) == ["4\n"]
    item = {"description": "d", "create": {"init": "sleep 30 &"}, "evaluation": {"match": "x"}}
    cut = parse_sample(item, 0, "cut-", None, "cut")
    out = _shell_outputs(cut, rootfs, ["ps -A --no-headers -o stat,comm"], script_timeout_s=1.0)
    assert [line.split()[1] for line in out[0].splitlines()] == ["bash", "bash", "ps"]
    assert "Z" not in out[0]


def test_failing_init_ends_the_sample_before_the_agent_acts(rootfs: Path) -> None:
    """AgentBench (41e6807) returns ``result: False`` when an init script exits non-zero."""
    item = {
        "description": "What is in /root/flag?",
        "create": {"init": ["echo one > /root/flag", "exit 3", "echo three > /root/flag"]},
        "evaluation": {"match": "one"},
    }
    sample = parse_sample(item, 0, "init-", None, "init")
    tr = replay(OSEpisode(sample, rootfs), [answer_turn("one")])
    assert tr.score == 0.0 and tr.details["status"] == "init script 1 failed (exit 3)"
    assert [s["exit_code"] for s in tr.details["setup"]] == [0, 3]
