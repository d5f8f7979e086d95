"""``db-mini``: a seeded generator of small DBBench-format questions with gold trajectories.

Aimed at models far smaller than the ones AgentBench was written for (a 135M instruct model), it
spans DBBench's question types (plain select, counting, SUM/AVG/MAX/MIN aggregation, ranking,
comparison, INSERT, UPDATE, DELETE) on tiny tables, in three levels:

1. three columns, 3-5 rows; look-ups, counts, MAX/MIN, and changes to one row named by its key;
2. four columns, 5-8 rows; conditions on a category, sums, averages, top-1 ranking, comparisons;
3. four columns with spaced, capitalised names, 8-14 rows; numeric conditions, top-k and list
   answers (compared as sets), conditional aggregates and changes to every matching row.

Samples are DBBench items (so the task, grader and ``data check`` need no special case) plus
``sql`` (the reference query), ``trajectory`` (the gold replies: one operation, then the answer,
in DBBench's exact action format) and ``level``. Expected outcomes are computed here in Python;
the replay through the real server in the tests and ``cycleqd data check`` is what proves them.
Numbers are stored as TEXT (as in DBBench) with a fixed width per column, so text order and
numeric order agree and plain ``MAX``/``ORDER BY`` give the intended answers.

Splits never share a sample: each candidate is assigned to a split by a hash of its content and
kept only by that split's generator, whose RNG is seeded from (seed, split, level).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cycleqd.tasks.db.data import default_add_description
from cycleqd.tasks.db.database import TableSpec, quote_ident
from cycleqd.tasks.db.protocol import answer_reply, operation_reply
from cycleqd.tasks.db.server import GROUP_CONCAT_MAX_LEN
from cycleqd.tasks.suites import Generator, SplitRule, Suite, register_suite

LEVELS = (1, 2, 3)

_FIRST_NAMES = (
    "Alice",
    "Bruno",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Irene",
    "Jonas",
    "Kenji",
    "Laura",
    "Mateo",
    "Nadia",
    "Oscar",
    "Priya",
    "Quinn",
    "Rosa",
    "Samir",
    "Tara",
    "Umar",
    "Vera",
    "Wendy",
    "Xavier",
    "Yara",
    "Zane",
    "Aiko",
    "Boris",
    "Chloe",
    "Diego",
)
_CITIES = ("Paris", "Lima", "Oslo", "Cairo", "Tokyo", "Quito", "Rome", "Delhi", "Seoul", "Lagos")
_PRODUCTS = (
    "apple",
    "bread",
    "candle",
    "drill",
    "eraser",
    "fork",
    "glue",
    "hammer",
    "ink",
    "jacket",
    "kettle",
    "lamp",
    "mug",
    "notebook",
    "oven",
    "pencil",
    "quilt",
    "radio",
    "soap",
    "towel",
    "umbrella",
    "vase",
    "wallet",
    "yarn",
    "zipper",
    "bucket",
    "comb",
    "desk",
    "fan",
    "globe",
)
_BOOKS = (
    "Blue River",
    "Cold Moon",
    "Dark Forest",
    "Early Light",
    "Far Shore",
    "Green Hill",
    "High Tide",
    "Iron Gate",
    "Jade Garden",
    "Kind Stranger",
    "Last Train",
    "Lost Key",
    "Night Owl",
    "Old Bridge",
    "Pale Fire",
    "Quiet Storm",
    "Red Sky",
    "Silver Lake",
    "Tall Grass",
    "Warm Rain",
    "White Tower",
    "Wild Road",
    "Young Sun",
    "Deep Well",
)
_TEAMS = (
    "Bears",
    "Comets",
    "Dragons",
    "Eagles",
    "Falcons",
    "Giants",
    "Hawks",
    "Jets",
    "Kings",
    "Lions",
    "Owls",
    "Pirates",
    "Rangers",
    "Sharks",
    "Tigers",
    "Vikings",
    "Wolves",
    "Rockets",
)


@dataclass(frozen=True)
class Theme:
    """A kind of table: a unique key column, a category column and two number columns."""

    table: str
    title: str  # the level-3 table name, with spaces
    noun: str
    key: str
    keys: tuple[str, ...]
    group: str
    groups: tuple[str, ...]
    numbers: tuple[tuple[str, int, int], ...]  # (column, low, high), one width per column


THEMES = (
    Theme(
        "students",
        "Student Records",
        "student",
        "name",
        _FIRST_NAMES,
        "city",
        _CITIES,
        (("score", 10, 99), ("age", 18, 65)),
    ),
    Theme(
        "products",
        "Shop Products",
        "product",
        "product",
        _PRODUCTS,
        "category",
        ("food", "tools", "home", "office", "garden"),
        (("price", 10, 99), ("stock", 10, 99)),
    ),
    Theme(
        "employees",
        "Company Staff",
        "employee",
        "name",
        _FIRST_NAMES,
        "department",
        ("Sales", "Finance", "Support", "Research", "Legal"),
        (("salary", 1000, 9999), ("years", 10, 40)),
    ),
    Theme(
        "books",
        "Library Books",
        "book",
        "title",
        _BOOKS,
        "genre",
        ("Mystery", "Fantasy", "History", "Poetry", "Science"),
        (("year", 1900, 2020), ("pages", 100, 999)),
    ),
    Theme(
        "teams",
        "League Teams",
        "team",
        "team",
        _TEAMS,
        "league",
        ("North", "South", "East", "West"),
        (("wins", 10, 40), ("losses", 10, 40)),
    ),
)


@dataclass
class Table:
    """A generated table: display names for the current level plus rows of strings."""

    theme: Theme
    name: str
    key: str
    group: str
    nums: list[str]
    rows: list[list[str]]

    @property
    def columns(self) -> list[str]:
        return [self.key, self.group, *self.nums]

    def col(self, name: str) -> int:
        return self.columns.index(name)

    def values(self, name: str) -> list[str]:
        return [r[self.col(name)] for r in self.rows]


@dataclass(frozen=True)
class Question:
    qtype: str
    description: str
    sql: str
    thought: str
    answer: list[str] | None = None  # SELECT types: values as the observation shows them
    result_rows: list[list[str]] | None = None  # mutations: the table afterwards


def table_fingerprint(rows: Sequence[Sequence[str | None]]) -> str:
    """DBBench's MD5 table hash computed in Python, for tables of ASCII text.

    ``CONCAT_WS`` skips NULLs, hence the filter. Only for data whose rows we control (generated
    samples, tests): the server's own computation is what grades, and the replay tests check
    that the two agree.
    """
    hashes = sorted(
        hashlib.md5(",".join(v for v in r if v is not None).encode()).hexdigest()[:5] for r in rows
    )
    if not hashes:
        return "[(None,)]"
    joined = ",".join(hashes).encode()[:GROUP_CONCAT_MAX_LEN]
    return f"[('{hashlib.md5(joined).hexdigest()}',)]"


def _q(name: str) -> str:
    return quote_ident(name)


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _display(name: str, level: int) -> str:
    return name.title() if level == 3 else name


def _make_table(rng: random.Random, theme: Theme, level: int) -> Table:
    n = {1: rng.randint(3, 5), 2: rng.randint(5, 8), 3: rng.randint(8, 14)}[level]
    n = min(n, len(theme.keys) - 1)  # one key stays free for INSERT questions
    numbers = theme.numbers[:1] if level == 1 else theme.numbers
    keys = rng.sample(theme.keys, n)
    groups = [rng.choice(theme.groups[: 2 + level]) for _ in range(n)]
    cols = [[str(v) for v in rng.sample(range(lo, hi + 1), n)] for _, lo, hi in numbers]
    rows = [[keys[i], groups[i], *(c[i] for c in cols)] for i in range(n)]
    return Table(
        theme=theme,
        name=theme.title if level == 3 else theme.table,
        key=_display(theme.key, level),
        group=_display(theme.group, level),
        nums=[_display(c, level) for c, _, _ in numbers],
        rows=rows,
    )


# --- question makers: each returns a Question or None when the table does not suit it -----------

Maker = Callable[[random.Random, Table, int], Question | None]


def _lookup(rng: random.Random, t: Table, level: int) -> Question:
    row = rng.choice(t.rows)
    col = rng.choice([t.group, *t.nums])
    sql = f"SELECT {_q(col)} FROM {_q(t.name)} WHERE {_q(t.key)} = {_lit(row[0])};"
    return Question(
        "other",
        f"What is the {col} of {row[0]}?",
        sql,
        f"I need the {col} of {row[0]}, so I select it from the table.",
        answer=[row[t.col(col)]],
    )


def _count_all(rng: random.Random, t: Table, level: int) -> Question:
    return Question(
        "counting",
        f"How many {t.theme.noun}s are there in the table?",
        f"SELECT COUNT(*) FROM {_q(t.name)};",
        "I need to count all rows of the table.",
        answer=[str(len(t.rows))],
    )


def _count_group(rng: random.Random, t: Table, level: int) -> Question:
    g = rng.choice(t.values(t.group))
    n = sum(v == g for v in t.values(t.group))
    return Question(
        "counting",
        f"How many {t.theme.noun}s have {t.group} {g}?",
        f"SELECT COUNT(*) FROM {_q(t.name)} WHERE {_q(t.group)} = {_lit(g)};",
        f"I need to count the rows whose {t.group} is {g}.",
        answer=[str(n)],
    )


def _count_above(rng: random.Random, t: Table, level: int) -> Question:
    col = rng.choice(t.nums)
    cut = rng.choice(t.values(col))
    n = sum(int(v) > int(cut) for v in t.values(col))
    return Question(
        "counting",
        f"How many {t.theme.noun}s have a {col} greater than {cut}?",
        f"SELECT COUNT(*) FROM {_q(t.name)} WHERE {_q(col)} > {cut};",
        f"I need to count the rows whose {col} is greater than {cut}.",
        answer=[str(n)],
    )


def _extreme(rng: random.Random, t: Table, level: int) -> Question:
    col = rng.choice(t.nums)
    fn, word = rng.choice((("MAX", "highest"), ("MIN", "lowest")))
    rows, where, among = t.rows, "", ""
    if level == 3:
        g = rng.choice(t.values(t.group))
        rows = [r for r in t.rows if r[1] == g]
        where, among = f" WHERE {_q(t.group)} = {_lit(g)}", f" among {t.theme.noun}s in {g}"
    vals = [int(r[t.col(col)]) for r in rows]
    best = max(vals) if fn == "MAX" else min(vals)
    return Question(
        f"aggregation-{fn}",
        f"What is the {word} {col}{among}?",
        f"SELECT {fn}({_q(col)}) FROM {_q(t.name)}{where};",
        f"I need the {word} value of {col}{among}.",
        answer=[str(best)],
    )


def _sum_or_avg(rng: random.Random, t: Table, level: int) -> Question:
    col = rng.choice(t.nums)
    fn = rng.choice(("SUM", "AVG"))
    rows, where, among = t.rows, "", ""
    if level == 3:
        g = rng.choice(t.values(t.group))
        rows = [r for r in t.rows if r[1] == g]
        where, among = f" WHERE {_q(t.group)} = {_lit(g)}", f" of {t.theme.noun}s in {g}"
    vals = [int(r[t.col(col)]) for r in rows]
    # The server sums TEXT as DOUBLE, so the observation renders e.g. 245.0 or 35.285714285714285
    # (an IEEE division of exact integer sums: Python's float division gives the same digits).
    value = float(sum(vals)) if fn == "SUM" else sum(vals) / len(vals)
    word = "total" if fn == "SUM" else "average"
    return Question(
        f"aggregation-{fn}",
        f"What is the {word} {col}{among or ' of all ' + t.theme.noun + 's'}?",
        f"SELECT {fn}({_q(col)}) FROM {_q(t.name)}{where};",
        f"I need the {word} of {col}{among}.",
        answer=[str(value)],
    )


def _ranking(rng: random.Random, t: Table, level: int) -> Question:
    col = rng.choice(t.nums)
    desc = rng.random() < 0.5
    word = "highest" if desc else "lowest"
    k = rng.randint(2, 3) if level == 3 else 1
    order = sorted(t.rows, key=lambda r: int(r[t.col(col)]), reverse=desc)
    top = [r[0] for r in order[:k]]
    sql = (
        f"SELECT {_q(t.key)} FROM {_q(t.name)} ORDER BY {_q(col)} "
        f"{'DESC' if desc else 'ASC'} LIMIT {k};"
    )
    if k == 1:
        text = f"Which {t.theme.noun} has the {word} {col}?"
    else:
        text = f"List the {k} {t.theme.noun}s with the {word} {col}."
    return Question(
        "ranking", text, sql, f"I sort the rows by {col} and take the top {k}.", answer=top
    )


def _comparison(rng: random.Random, t: Table, level: int) -> Question:
    a, b = rng.sample(t.rows, 2)
    col = rng.choice(t.nums)
    desc = rng.random() < 0.5
    word = "higher" if desc else "lower"
    win = max((a, b), key=lambda r: int(r[t.col(col)]) * (1 if desc else -1))
    sql = (
        f"SELECT {_q(t.key)} FROM {_q(t.name)} WHERE {_q(t.key)} IN ({_lit(a[0])}, {_lit(b[0])}) "
        f"ORDER BY {_q(col)} {'DESC' if desc else 'ASC'} LIMIT 1;"
    )
    return Question(
        "comparison",
        f"Which has the {word} {col}, {a[0]} or {b[0]}?",
        sql,
        f"I compare the {col} of {a[0]} and {b[0]}.",
        answer=[win[0]],
    )


def _filter_list(rng: random.Random, t: Table, level: int) -> Question:
    g = rng.choice(t.values(t.group))
    names = [r[0] for r in t.rows if r[1] == g]
    return Question(
        "other",
        f"Which {t.theme.noun}s have {t.group} {g}? List them all.",
        f"SELECT {_q(t.key)} FROM {_q(t.name)} WHERE {_q(t.group)} = {_lit(g)};",
        f"I select every {t.key} whose {t.group} is {g}.",
        answer=names,
    )


def _insert(rng: random.Random, t: Table, level: int) -> Question:
    taken = set(t.values(t.key))
    key = rng.choice([k for k in t.theme.keys if k not in taken])
    row = [key, rng.choice(t.theme.groups)]
    for _, lo, hi in t.theme.numbers[: len(t.nums)]:
        row.append(str(rng.randint(lo, hi)))
    order = list(range(len(row)))
    if level == 3:
        rng.shuffle(order)
    parts = ", ".join(f"{t.columns[i]} '{row[i]}'" for i in order)
    cols = ", ".join(_q(t.columns[i]) for i in order)
    vals = ", ".join(_lit(row[i]) for i in order)
    return Question(
        "INSERT",
        f"Insert a new {t.theme.noun} into the table with {parts}.",
        f"INSERT INTO {_q(t.name)} ({cols}) VALUES ({vals});",
        f"I insert one row with the given values into {t.name}.",
        result_rows=[*t.rows, row],
    )


def _update(rng: random.Random, t: Table, level: int) -> Question | None:
    col = rng.choice(t.nums)
    _, lo, hi = t.theme.numbers[t.nums.index(col)]
    if level < 3:
        target = rng.choice(t.rows)
        new = str(rng.randint(lo, hi))
        rows = [[*r[: t.col(col)], new, *r[t.col(col) + 1 :]] if r is target else r for r in t.rows]
        return Question(
            "UPDATE",
            f"Change the {col} of {target[0]} to {new}.",
            f"UPDATE {_q(t.name)} SET {_q(col)} = {_lit(new)} "
            f"WHERE {_q(t.key)} = {_lit(target[0])};",
            f"I update the {col} of the row where {t.key} is {target[0]}.",
            result_rows=rows,
        )
    cut = rng.choice(t.values(col))
    g = rng.choice(t.theme.groups)
    rows = [[r[0], g, *r[2:]] if int(r[t.col(col)]) < int(cut) else r for r in t.rows]
    if rows == t.rows:
        return None
    return Question(
        "UPDATE",
        f"Set the {t.group} to {g} for every {t.theme.noun} whose {col} is less than {cut}.",
        f"UPDATE {_q(t.name)} SET {_q(t.group)} = {_lit(g)} WHERE {_q(col)} < {cut};",
        f"I update the {t.group} of the rows whose {col} is below {cut}.",
        result_rows=rows,
    )


def _delete(rng: random.Random, t: Table, level: int) -> Question | None:
    if level == 1:
        target = rng.choice(t.rows)
        text = f"Delete the {t.theme.noun} {target[0]} from the table."
        where = f"{_q(t.key)} = {_lit(target[0])}"
        rows = [r for r in t.rows if r is not target]
    elif level == 2:
        g = rng.choice(t.values(t.group))
        text = f"Remove every {t.theme.noun} whose {t.group} is {g}."
        where = f"{_q(t.group)} = {_lit(g)}"
        rows = [r for r in t.rows if r[1] != g]
    else:
        col = rng.choice(t.nums)
        cut = rng.choice(t.values(col))
        text = f"Delete all {t.theme.noun}s with a {col} greater than {cut}."
        where = f"{_q(col)} > {cut}"
        rows = [r for r in t.rows if int(r[t.col(col)]) <= int(cut)]
    if not rows or len(rows) == len(t.rows):
        return None
    return Question(
        "DELETE",
        text,
        f"DELETE FROM {_q(t.name)} WHERE {where};",
        "I delete the matching rows.",
        result_rows=rows,
    )


MAKERS: dict[int, tuple[Maker, ...]] = {
    1: (_lookup, _count_all, _extreme, _insert, _update, _delete),
    2: (
        _lookup,
        _count_group,
        _extreme,
        _sum_or_avg,
        _ranking,
        _comparison,
        _insert,
        _update,
        _delete,
    ),
    3: (
        _count_above,
        _extreme,
        _sum_or_avg,
        _ranking,
        _comparison,
        _filter_list,
        _insert,
        _update,
        _delete,
    ),
}


def _sample(t: Table, q: Question, level: int) -> dict[str, Any]:
    spec = TableSpec(t.name, tuple(t.columns), tuple(tuple(r) for r in t.rows))
    item: dict[str, Any] = {
        "description": q.description,
        "add_description": default_add_description(spec),
        "type": [q.qtype],
        "table": {
            "table_name": t.name,
            "table_info": {
                "columns": [{"name": c, "type": "TEXT"} for c in t.columns],
                "rows": t.rows,
            },
        },
        "sql": {"query": q.sql},
        "level": level,
        "source": "db-mini",
    }
    first = operation_reply(q.sql, q.thought)
    if q.result_rows is not None:
        item["label"] = [q.sql]  # as in DBBench's own INSERT/UPDATE items
        item["answer_md5"] = table_fingerprint(q.result_rows)
        item["trajectory"] = [first, answer_reply([], "The table has been changed as asked.")]
    else:
        assert q.answer is not None
        item["label"] = q.answer
        item["trajectory"] = [first, answer_reply(q.answer, "The result answers the question.")]
    return item


def _draw(rng: random.Random, level: int) -> dict[str, Any] | None:
    table = _make_table(rng, rng.choice(THEMES), level)
    question = rng.choice(MAKERS[level])(rng, table, level)
    return None if question is None else _sample(table, question, level)


def _content(item: dict[str, Any]) -> str:
    return json.dumps([item["description"], item["table"]], sort_keys=True)


def _finish(item: dict[str, Any], level: int, split: str, seed: int, index: int) -> dict[str, Any]:
    item["id"] = f"db-mini-{split}-{seed}-{index}"
    return item


generate: Generator[dict[str, Any]] = Generator(
    name="db-mini",
    levels=LEVELS,
    rng_key="db-mini:{seed}:{split}:{level}",
    mixing="random",
    split_rule=SplitRule(shares=(1, 1, 1)),  # thirds, by the whole digest
    attempts=lambda n: 200 * n + 1000,
    draw=_draw,
    key=_content,
    content=_content,
    finish=_finish,
)


SUITE = register_suite(Suite("db-mini", "dbbench", generate, LEVELS))
