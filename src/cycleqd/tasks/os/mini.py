"""``os-mini``: a seeded generator of small AgentBench-OS problems with gold trajectories.

Aimed at models far smaller than AgentBench's (135M parameters): level 1 is one obvious command
(count the files in a folder, a file's line count), level 2 needs a pipe or a flag (find by
extension, grep -c, chmod, useradd), level 3 touches processes, owners and permissions. Every
sample is in the public AgentBench OS format (``create.init`` with inline code, ``start``,
``evaluation.match`` or ``check`` + ``example`` with inline code), so the task, grader and
``cycleqd data check`` treat it like real data, plus a ``trajectory``: the assistant turns, in the
exact AgentBench action format, that solve it.

Splits cannot overlap: a candidate belongs to the split chosen by a hash of its content, and the
generator for (seed, split) keeps drawing until it has ``n`` candidates of its own split.
"""

from __future__ import annotations

import json
import random
import shlex
from collections.abc import Callable
from typing import Any

from cycleqd.tasks.os.reference import answer_turn, bash_turn, finish_turn
from cycleqd.tasks.suites import Generator, SplitRule, Suite, register_suite

WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "indigo",
    "juniper", "kestrel", "lumen", "maple", "nectar", "orbit", "pebble", "quartz", "raven",
    "sierra", "tundra", "umber", "velvet", "willow", "xenon", "yonder", "zephyr",
)  # fmt: skip
BASES = ("/root", "/home", "/srv", "/opt", "/tmp", "/var/data")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
INTEGER_MATCH = "from sys import argv\nif int(argv[1]) == int(argv[2]): exit(0)\nexit(1)"

Sample = dict[str, Any]


def _sample(
    description: str,
    init: str,
    trajectory: list[str],
    *,
    match: str | None = None,
    example: str | None = None,
    check: str | None = None,
    start: str | None = None,
    labels: tuple[str, ...] = (),
) -> Sample:
    """Assemble the AgentBench shape; ``example`` alone means check = [example, integer match]."""
    if match is not None:
        evaluation: dict[str, Any] = {"match": match}
    elif check is not None:
        evaluation = {"check": {"language": "bash", "code": check}}
    else:
        assert example is not None
        evaluation = {
            "check": [None, {"language": "python", "code": INTEGER_MATCH}],
            "example": {"code": example},
        }
    item: Sample = {"description": description, "create": {"local": "default"}}
    if init:
        item["create"]["init"] = {"code": init}
    if start is not None:
        item["start"] = start
    item["evaluation"] = evaluation
    item["labels"] = list(labels)
    item["trajectory"] = trajectory
    return item


def _dir(rng: random.Random) -> str:
    return f"{rng.choice(BASES)}/{rng.choice(WORDS)}"


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def _write_lines(path: str, lines: list[str]) -> str:
    body = "\\n".join(lines)
    return f"printf '{body}\\n' > {shlex.quote(path)}"


# -- level 1 ---------------------------------------------------------------------------------


def count_files(rng: random.Random) -> Sample:
    d, k = _dir(rng), rng.randint(1, 9)
    stem = rng.choice(WORDS)
    init = f"mkdir -p {d} && touch " + " ".join(f"{d}/{stem}_{i}.txt" for i in range(k))
    cmd = f"ls -1 {d} | wc -l"
    return _sample(
        f"How many files are in the directory {d}?",
        init,
        [bash_turn(cmd, f"I need to count the files in {d}."), answer_turn(str(k))],
        match=str(k),
        labels=("file",),
    )


def line_count(rng: random.Random) -> Sample:
    d, m = _dir(rng), rng.randint(2, 30)
    path = f"{d}/{rng.choice(WORDS)}.txt"
    init = f"mkdir -p {d} && " + _write_lines(path, _words(rng, m))
    cmd = f"wc -l < {path}"
    return _sample(
        f"How many lines are in the file {path}?",
        init,
        [bash_turn(cmd, f"I need to count the lines of {path}."), answer_turn(str(m))],
        example=cmd,
        labels=("file", "text"),
    )


def read_file(rng: random.Random) -> Sample:
    d, word = _dir(rng), f"{rng.choice(WORDS)}-{rng.randint(10, 99)}"
    path = f"{d}/{rng.choice(('secret', 'note', 'key', 'token'))}.txt"
    init = f"mkdir -p {d} && echo {word} > {path}"
    return _sample(
        f"What is the content of the file {path}?",
        init,
        [bash_turn(f"cat {path}", f"I need to print {path}."), answer_turn(word)],
        match=word,
        labels=("file",),
    )


def create_file(rng: random.Random) -> Sample:
    d, name = _dir(rng), f"{rng.choice(WORDS)}.{rng.choice(('txt', 'log', 'md'))}"
    return _sample(
        f"Create an empty file named {name} in the directory {d}.",
        f"mkdir -p {d}",
        [bash_turn(f"touch {d}/{name}", f"I need to create {d}/{name}."), finish_turn()],
        check=f"test -f {d}/{name} && test ! -s {d}/{name}",
        labels=("file",),
    )


# -- level 2 ---------------------------------------------------------------------------------


def count_extension(rng: random.Random) -> Sample:
    d = _dir(rng)
    ext, others = rng.sample(("py", "txt", "log", "csv", "sh"), 2)[0], ("md", "json")
    k = rng.randint(1, 6)
    files = [f"{d}/{rng.choice(('', 'sub/', 'sub/deep/'))}f{i}.{ext}" for i in range(k)]
    files += [f"{d}/{rng.choice(('', 'sub/'))}g{i}.{rng.choice(others)}" for i in range(3)]
    init = f"mkdir -p {d}/sub/deep && touch " + " ".join(files)
    cmd = f"find {d} -type f -name '*.{ext}' | wc -l"
    return _sample(
        f"How many files with the extension .{ext} are in {d} and its subdirectories?",
        init,
        [bash_turn(cmd, f"I need to find the .{ext} files under {d}."), answer_turn(str(k))],
        example=cmd,
        labels=("file", "command"),
    )


def grep_count(rng: random.Random) -> Sample:
    d = _dir(rng)
    path = f"{d}/app.log"
    levels = [rng.choice(("INFO", "INFO", "WARN", "ERROR")) for _ in range(rng.randint(5, 25))]
    # At least one match: `grep -c` exits 1 on a count of 0, which fails the example check.
    if "ERROR" not in levels:
        levels[rng.randrange(len(levels))] = "ERROR"
    lines = [f"{lvl} {w}" for lvl, w in zip(levels, _words(rng, len(levels)), strict=True)]
    k = sum(lvl == "ERROR" for lvl in levels)
    init = f"mkdir -p {d} && " + _write_lines(path, lines)
    cmd = f"grep -c ERROR {path}"
    return _sample(
        f"How many lines of the file {path} contain the word ERROR?",
        init,
        [bash_turn(cmd, "I need to count the ERROR lines."), answer_turn(str(k))],
        example=cmd,
        labels=("file", "text", "log"),
    )


def make_executable(rng: random.Random) -> Sample:
    d = _dir(rng)
    path = f"{d}/{rng.choice(WORDS)}.sh"
    return _sample(
        f"Make the file {path} executable.",
        f"mkdir -p {d} && echo 'echo hi' > {path} && chmod 644 {path}",
        [bash_turn(f"chmod +x {path}", f"I need to add the execute bit to {path}."), finish_turn()],
        check=f"test -x {path}",
        labels=("permission", "file"),
    )


def create_user(rng: random.Random) -> Sample:
    user = f"{rng.choice(USERS)}{rng.randint(1, 99)}"
    return _sample(
        f"Create a new user named {user}.",
        "",
        [bash_turn(f"useradd {user}", f"I need to add the user {user}."), finish_turn()],
        check=f"id {user}",
        labels=("user",),
    )


def largest_file(rng: random.Random) -> Sample:
    d = _dir(rng)
    names = rng.sample(WORDS, 4)
    sizes = rng.sample(range(1, 60), 4)
    init = f"mkdir -p {d} && " + " && ".join(
        f"head -c {s * 100} /dev/zero > {d}/{n}.bin" for n, s in zip(names, sizes, strict=True)
    )
    biggest = names[sizes.index(max(sizes))] + ".bin"
    return _sample(
        f"Which file in the directory {d} is the largest? Answer with the file name only.",
        init,
        [bash_turn(f"ls -S {d} | head -n 1", "I need to sort the files by size."),
         answer_turn(biggest)],
        match=biggest,
        labels=("file",),
    )  # fmt: skip


def sum_numbers(rng: random.Random) -> Sample:
    d = _dir(rng)
    path = f"{d}/numbers.txt"
    nums = [rng.randint(1, 50) for _ in range(rng.randint(3, 12))]
    init = f"mkdir -p {d} && " + _write_lines(path, [str(x) for x in nums])
    cmd = f"awk '{{s+=$1}} END {{print s}}' {path}"
    return _sample(
        f"What is the sum of the numbers in the file {path}? There is one number per line.",
        init,
        [bash_turn(cmd, "I need to add up the numbers."), answer_turn(str(sum(nums)))],
        example=cmd,
        labels=("file", "text"),
    )


# -- level 3 ---------------------------------------------------------------------------------


def file_owner(rng: random.Random) -> Sample:
    d, user = _dir(rng), rng.choice(USERS)
    path = f"{d}/{rng.choice(WORDS)}.txt"
    init = f"useradd {user} && mkdir -p {d} && touch {path} && chown {user} {path}"
    return _sample(
        f"Which user owns the file {path}?",
        init,
        [bash_turn(f"stat -c %U {path}", "I need the owner of the file."), answer_turn(user)],
        match=user,
        labels=("user", "permission"),
    )


def octal_permissions(rng: random.Random) -> Sample:
    d, mode = _dir(rng), rng.choice(("600", "640", "644", "700", "750", "755", "444"))
    path = f"{d}/{rng.choice(WORDS)}.conf"
    return _sample(
        f"What are the permissions of the file {path} in octal notation (for example 755)?",
        f"mkdir -p {d} && touch {path} && chmod {mode} {path}",
        [bash_turn(f"stat -c %a {path}", "I need the octal mode."), answer_turn(mode)],
        match=mode,
        labels=("permission", "file"),
    )


def count_processes(rng: random.Random) -> Sample:
    k, secs = rng.randint(1, 5), rng.randint(500, 900)
    start = f"for i in $(seq {k}); do sleep {secs} & done"
    cmd = "pgrep -x sleep | wc -l"
    return _sample(
        "How many sleep processes are running?",
        "",
        [bash_turn(cmd, "I need to count the sleep processes."), answer_turn(str(k))],
        example=cmd,
        start=start,
        labels=("process",),
    )


def stop_processes(rng: random.Random) -> Sample:
    k, secs = rng.randint(1, 4), rng.randint(500, 900)
    start = f"for i in $(seq {k}); do sleep {secs} & done"
    return _sample(
        "Some sleep processes are running in the background. Stop all of them.",
        "",
        [bash_turn("pkill -x sleep", "I need to kill every sleep process."), finish_turn()],
        check="sleep 0.2; ! ps -eo stat=,comm= | grep -v '^Z' | grep -qw sleep",
        start=start,
        labels=("process",),
    )


def change_owner(rng: random.Random) -> Sample:
    d, user = _dir(rng), rng.choice(USERS)
    path = f"{d}/{rng.choice(WORDS)}.txt"
    return _sample(
        f"Change the owner of the file {path} to the user {user}.",
        f"useradd {user} && mkdir -p {d} && touch {path}",
        [bash_turn(f"chown {user} {path}", "I need to change the owner."), finish_turn()],
        check=f'[ "$(stat -c %U {path})" = {user} ]',
        labels=("user", "permission"),
    )


def distinct_ips(rng: random.Random) -> Sample:
    d = _dir(rng)
    path = f"{d}/access.log"
    pool = [f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}" for _ in range(rng.randint(2, 6))]
    lines = [f"{rng.choice(pool)} GET /{rng.choice(WORDS)}" for _ in range(rng.randint(6, 20))]
    k = len({ln.split()[0] for ln in lines})
    init = f"mkdir -p {d} && " + _write_lines(path, lines)
    cmd = f"cut -d' ' -f1 {path} | sort -u | wc -l"
    return _sample(
        f"How many distinct IP addresses appear in {path}? The IP is the first field of a line.",
        init,
        [bash_turn(cmd, "I need the unique first fields."), answer_turn(str(k))],
        example=cmd,
        labels=("text", "log"),
    )


FAMILIES: dict[int, tuple[Callable[[random.Random], Sample], ...]] = {
    1: (count_files, line_count, read_file, create_file),
    2: (count_extension, grep_count, make_executable, create_user, largest_file, sum_numbers),
    3: (
        file_owner,
        octal_permissions,
        count_processes,
        stop_processes,
        change_owner,
        distinct_ips,
    ),
}
LEVELS = tuple(sorted(FAMILIES))


Candidate = tuple[Callable[[random.Random], Sample], Sample]


def _draw(rng: random.Random, level: int) -> Candidate:
    family = rng.choice(FAMILIES[level])
    return family, family(rng)


def _key(candidate: Candidate) -> str:
    sample = candidate[1]
    return json.dumps([sample["description"], sample["create"], sample.get("start")])


def _content(candidate: Candidate) -> str:
    sample = candidate[1]
    return json.dumps(
        [sample["description"], sample["create"], sample.get("start")], sort_keys=True
    )


def _finish(candidate: Candidate, level: int, split: str, seed: int, index: int) -> Sample:
    family, sample = candidate
    sample["level"] = level
    sample["family"] = family.__name__
    return sample


generate: Generator[Candidate] = Generator(
    name="os-mini",
    levels=LEVELS,
    rng_key="os-mini:{seed}:{split}",
    mixing="cycle",
    split_rule=SplitRule(shares=(1, 1, 1), digest_bytes=4),  # thirds, by 4 bytes of the digest
    attempts=lambda n: max(1000, n * 200),
    draw=_draw,
    key=_key,
    content=_content,
    finish=_finish,
)


SUITE = register_suite(Suite("os-mini", "agentbench-os", generate, LEVELS))
