"""One episode's own database, reached through its own account.

Every episode gets a fresh database holding its sample's table and a user with rights on that
database only, created by the admin connection and dropped when the episode closes. The model's
SQL runs as that user, so ``DROP DATABASE`` of a neighbour, ``GRANT``, ``SHUTDOWN``, ``SET
GLOBAL``, ``INTO OUTFILE`` or ``LOAD_FILE`` fail (or read nothing) as they would for any
unprivileged account: episodes run concurrently without seeing each other, and the server
outlives any model.

Statements are executed the way DBBench's ``Container.execute`` does: a fresh session per
statement, multi-statements allowed, the first result set rendered as ``str`` of a list of tuples
(``[]`` for statements without one), the error rendered as ``errno (sqlstate): message``, and the
text cut at 800 characters followed by ``[TRUNCATED]``.

Each model session gets MySQL 8's ``sql_mode`` and ``group_concat_max_len`` (also on a ``db_url``
server configured otherwise), and one MariaDB-only correction: MariaDB's strict mode rejects an
``UPDATE``/``INSERT ... SELECT`` that reads a TEXT value such as ``'?'`` as a number, where MySQL 8
reads TEXT columns as numbers without a warning and so runs the statement. Such a statement is run
again with strict mode off for that one statement (:func:`lenient_retry`); docs/dbbench-mysql8.md
lists the differences and why this is the narrowest fix MariaDB allows.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from cycleqd.tasks.db.server import GROUP_CONCAT_MAX_LEN, MYSQL8_SQL_MODE, DatabaseServer

OBSERVATION_LIMIT = 800
TRUNCATED = "[TRUNCATED]"
# Seconds one model statement may run (per-user limit on MariaDB, client-side timeout anywhere).
STATEMENT_LIMIT_S = 10.0
# Rows a model's top-level SELECT may return. The observation shows at most 800 characters, which
# is at most 134 rows (each row renders as 4+ characters plus ", "), so a cap of 1000 changes no
# observation while keeping a million-row SELECT from filling memory.
SELECT_ROW_CAP = 1000

# MySQL 8's modes without strict mode, for the one statement that lenient_retry() runs again.
LENIENT_SQL_MODE = ",".join(m for m in MYSQL8_SQL_MODE.split(",") if not m.startswith("STRICT_"))
# ER_TRUNCATED_WRONG_VALUE as raised when a string is read as a number (not for dates).
_TRUNCATED_NUMBER = re.compile(r"Truncated incorrect (?:DOUBLE|DECIMAL|INTEGER) value: ")
# Whitespace and comments before the first keyword; executable comments (/*! */, /*M! */) are
# code to the server, so they end the skipping (and with it any retry).
_LEADING_NOISE = re.compile(r"(?:\s+|/\*(?!!|M!).*?\*/|(?:#|--(?=\s))[^\n]*)*", re.DOTALL)
# Single statements that are atomic on InnoDB: when one fails, it changed nothing, so running it
# again is running it once. CALL, compound statements and EXECUTE can fail half-way; CREATE ...
# SELECT is left out because CREATE OR REPLACE drops the old table before it fails.
_RETRIED_VERBS = frozenset({"UPDATE", "INSERT", "REPLACE", "DELETE"})


@dataclass(frozen=True)
class TableSpec:
    """A DBBench table: every column is TEXT, rows are inserted as given."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def truncate(text: str) -> str:
    """DBBench's observation cut: the first 800 characters, then ``[TRUNCATED]``."""
    if len(text) > OBSERVATION_LIMIT:
        return text[:OBSERVATION_LIMIT] + TRUNCATED
    return text


def format_error(exc: BaseException) -> str:
    """The error text as mysql-connector renders it: ``1146 (42S02): Table 'x.y' doesn't exist``."""
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], int):
        state = getattr(exc, "sqlstate", None)
        return f"{args[0]} ({state}): {args[1]}" if state else f"{args[0]}: {args[1]}"
    return str(exc)


def lenient_retry(sql: str, error: BaseException) -> str | None:
    """The statement to run instead when strict mode alone rejected ``sql``'s first statement.

    MariaDB reads a TEXT value as a number with a "Truncated incorrect DECIMAL/DOUBLE value"
    warning, and in a data-change statement strict mode turns that warning into error 1292, so
    ``UPDATE t SET a = 'x' WHERE text_col = 16`` fails as soon as one row holds ``'?'``. MySQL 8,
    which DBBench's answers come from, reads TEXT (BLOB) columns as numbers without a warning,
    so its strict mode has nothing to turn into an error and the matching rows are updated.
    MariaDB has no switch that separates these warnings from the ones strict mode should stop
    (a value that does not fit its column, division by zero), so the statement is run again
    with ``SET STATEMENT sql_mode = <MySQL 8's modes minus STRICT_TRANS_TABLES> FOR``: strict
    mode is off for that one statement and stays on for every other statement, later ones in
    the same text included. Only the first statement is retried (a later one's error is not
    raised to us, as DBBench shows the first result only) and only single-statement verbs that
    a failure leaves without effect; None when no retry applies.
    """
    args = getattr(error, "args", ())
    if len(args) < 2 or args[0] != 1292 or not _TRUNCATED_NUMBER.match(str(args[1])):
        return None
    start = _LEADING_NOISE.match(sql)
    verb = re.match(r"[A-Za-z]+", sql[start.end() if start else 0 :])
    if verb is None or verb.group(0).upper() not in _RETRIED_VERBS:
        return None
    return f"SET STATEMENT sql_mode = '{LENIENT_SQL_MODE}' FOR {sql}"


def md5_query(table: str, columns: Sequence[str]) -> str:
    """DBBench's table fingerprint, verbatim: a 5-hex-digit MD5 per row, sorted, concatenated."""
    cols = ",".join(quote_ident(c) for c in columns)
    return (
        "select md5(group_concat(rowhash order by rowhash)) as hash "
        f"from( SELECT substring(MD5(CONCAT_WS(',', {cols})), 1, 5) AS rowhash "
        f"FROM {quote_ident(table)}) as sub;"
    )


class EpisodeDatabase:
    """A database plus an account with rights on it alone; see the module docstring."""

    def __init__(
        self,
        server: DatabaseServer,
        name: str,
        password: str,
        table: TableSpec,
        statement_limit_s: float,
    ) -> None:
        self.server = server
        self.name = name
        self.user = name
        self.password = password
        self.table = table
        self.statement_limit_s = statement_limit_s
        self.dropped = False
        self.setup_error: str | None = None

    @classmethod
    def create(
        cls,
        server: DatabaseServer,
        table: TableSpec,
        *,
        statement_limit_s: float = STATEMENT_LIMIT_S,
    ) -> EpisodeDatabase:
        name = "cqdb_" + secrets.token_hex(6)
        db = cls(server, name, secrets.token_urlsafe(18), table, statement_limit_s)
        try:
            admin = server.connect()
        except pymysql.MySQLError as exc:
            raise ConnectionError(f"database server unreachable: {exc}") from exc
        try:
            with admin.cursor() as cur:
                db._create_account(cur)
                db._create_table(cur)
        except BaseException:
            with contextlib.suppress(Exception):
                db.drop()
            raise
        finally:
            admin.close()
        return db

    def _create_account(self, cur: pymysql.cursors.Cursor) -> None:
        account = (self.user, self.server.user_host)
        limit = ""
        if self.server.mariadb:  # MySQL has no per-user statement limit; the client one remains
            limit = f" WITH MAX_STATEMENT_TIME {self.statement_limit_s:g}"
        db = quote_ident(self.name)
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE USER %s@%s IDENTIFIED BY %s{limit}", (*account, self.password))
        cur.execute(f"GRANT ALL PRIVILEGES ON {db}.* TO %s@%s", account)

    def _create_table(self, cur: pymysql.cursors.Cursor) -> None:
        """Create and fill the table; a failure is recorded, not raised, as in DBBench.

        DBBench runs its set-up script and ignores its error, so a sample whose table the
        server rejects (an empty column name, a row of the wrong length) is played without its
        table or rows. ``setup_error`` keeps the reason for the records.
        """
        t = self.table
        target = f"{quote_ident(self.name)}.{quote_ident(t.name)}"
        cols = ",".join(f"{quote_ident(c)} TEXT" for c in t.columns)
        try:
            cur.execute(f"CREATE TABLE {target} ({cols})")
            if t.rows:
                # Identifiers may contain '%', which pymysql's formatting would read as a slot.
                into = f"{target} ({','.join(quote_ident(c) for c in t.columns)})"
                values = ",".join("(" + ",".join(["%s"] * len(r)) + ")" for r in t.rows)
                cur.execute(
                    f"INSERT INTO {into.replace('%', '%%')} VALUES {values}",
                    [v for r in t.rows for v in r],
                )
        except pymysql.MySQLError as exc:
            self.setup_error = format_error(exc)

    def execute(self, sql: str) -> str:
        """Run the model's SQL as the episode's user; return DBBench's observation text."""
        observation, error = self._attempt(sql)
        retry = lenient_retry(sql, error) if error is not None and self.server.mariadb else None
        if retry is not None:
            observation, _ = self._attempt(retry)
        return truncate(observation)

    def _attempt(self, sql: str) -> tuple[str, BaseException | None]:
        """One fresh session running ``sql``: the observation, and the error if it failed."""
        try:
            conn = self.server.connect(
                self.user,
                self.password,
                client_flag=CLIENT.MULTI_STATEMENTS,
                read_timeout=self.statement_limit_s + 5,
                write_timeout=self.statement_limit_s + 5,
            )
        except pymysql.MySQLError as exc:
            raise ConnectionError(f"database server unreachable: {exc}") from exc
        thread_id = conn.thread_id()
        try:
            return self._run(conn, sql), None
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 2013:  # client-side timeout: stop the query itself
                self._kill(thread_id)
            return format_error(exc), exc
        except (pymysql.MySQLError, UnicodeError) as exc:
            return format_error(exc), exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, conn: pymysql.connections.Connection, sql: str) -> str:
        cur = conn.cursor()
        try:
            # MySQL 8's settings per session, so that a db_url server configured otherwise
            # behaves as the private one does.
            cur.execute(
                f"SET SESSION sql_select_limit = {SELECT_ROW_CAP}, "
                f"sql_mode = '{MYSQL8_SQL_MODE}', group_concat_max_len = {GROUP_CONCAT_MAX_LEN}"
            )
            cur.execute(f"USE {quote_ident(self.name)}")
            cur.execute(sql)
            # mysql-connector's fetchall() gives [] for statements without a result set.
            text = str(list(cur.fetchall())) if cur.description is not None else "[]"
            # Later statements of a multi-statement run; their results and errors are not shown
            # (DBBench renders the first result only).
            with contextlib.suppress(pymysql.MySQLError):
                while cur.nextset():
                    pass
            return text
        finally:
            # Detached: after a failed nextset() the cursor's close() would wait for a result
            # that never comes.
            cur.connection = None

    def _kill(self, thread_id: int) -> None:
        with contextlib.suppress(pymysql.MySQLError):
            admin = self.server.connect()
            try:
                with admin.cursor() as cur:
                    cur.execute(f"KILL {int(thread_id)}")
            finally:
                admin.close()

    def table_hash(self) -> str:
        """DBBench's MD5 fingerprint of the table, computed by the server, as observation text."""
        try:
            admin = self.server.connect()
        except pymysql.MySQLError as exc:
            raise ConnectionError(f"database server unreachable: {exc}") from exc
        try:
            with admin.cursor() as cur:
                cur.execute(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}")
                cur.execute(f"USE {quote_ident(self.name)}")
                cur.execute(md5_query(self.table.name, self.table.columns))
                return truncate(str(list(cur.fetchall())))
        except pymysql.MySQLError as exc:
            return truncate(format_error(exc))
        finally:
            admin.close()

    def drop(self) -> None:
        """Drop the database and the account (ending the account's sessions); idempotent."""
        if self.dropped:
            return
        try:
            admin = self.server.connect()
        except pymysql.MySQLError as exc:
            raise ConnectionError(f"database server unreachable: {exc}") from exc
        try:
            with admin.cursor() as cur:
                cur.execute("SET SESSION lock_wait_timeout = 30")
                cur.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (self.user,)
                )
                for (pid,) in cur.fetchall():
                    with contextlib.suppress(pymysql.MySQLError):
                        cur.execute(f"KILL {int(pid)}")
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.name)}")
                cur.execute("DROP USER IF EXISTS %s@%s", (self.user, self.server.user_host))
        finally:
            admin.close()
        self.dropped = True
