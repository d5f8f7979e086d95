"""The MySQL-compatible server the database task runs on.

DBBench answers depend on MySQL semantics (NULL handling in ``CONCAT_WS``, collations, backslash
escapes, ``GROUP_CONCAT`` truncation), so the task talks to a real server, never an emulation.
By default the process starts its own MariaDB on first use: a throwaway data directory under the
temp folder, a unix socket in a 0700 directory and no TCP port, so nothing outside this user can
reach it. It is shared by every episode of the process and stopped at exit; should the process be
killed instead, the kernel kills the server with it (``PR_SET_PDEATHSIG``) and the next start
removes what is left. ``db_url`` (``mysql://user:pass@host:port``) points at an existing server
instead; that account needs the rights to create databases and users.

The server is configured to behave like the MySQL 8 that DBBench's answers were computed on:
utf8mb4 with an accent- and case-insensitive NO PAD collation, MySQL 8's ``sql_mode`` and
``group_concat_max_len = 1024`` (MariaDB's default is 1M, which would change the table hash of
any table over about 170 rows). Strict mode stays on: where MariaDB's strict mode rejects what
MySQL 8's accepts (a TEXT value read as a number in an UPDATE), the episode database runs that one
statement again without it; see ``database.lenient_retry`` and docs/dbbench-mysql8.md.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql

from cycleqd.errors import CycleQDError

# MySQL 8.0's defaults, which DBBench's labels and hashes were produced under.
MYSQL8_SQL_MODE = (
    "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)
GROUP_CONCAT_MAX_LEN = 1024
# Seconds any statement of the private server may run: a model's cross join must not stall a run.
SERVER_STATEMENT_LIMIT_S = 30
_START_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect (exactly one of ``unix_socket`` and ``host`` is used)."""

    user: str
    password: str
    host: str = "localhost"
    port: int = 3306
    unix_socket: str | None = None


class DatabaseServer:
    """A server we administer: the admin endpoint plus what episodes need to know about it.

    ``user_host`` is the host part of the per-episode accounts (``localhost`` for our socket
    server, ``%`` for a remote one); ``mariadb`` selects MariaDB-only options such as a per-user
    statement time limit.
    """

    def __init__(self, admin: Endpoint, *, user_host: str) -> None:
        self.admin_endpoint = admin
        self.user_host = user_host
        self.mariadb = True
        self.version = ""

    def connect(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        database: str | None = None,
        **options: Any,
    ) -> pymysql.connections.Connection:
        """A new connection as ``user`` (default: the admin); connections are not thread-safe."""
        ep = self.admin_endpoint
        # Over a unix socket TLS protects nothing, and building its context costs ~30 ms a
        # connection (loading the CA store), three times the rest of an episode's set-up.
        where: dict[str, Any] = (
            {"unix_socket": ep.unix_socket, "ssl_disabled": True}
            if ep.unix_socket
            else {"host": ep.host, "port": ep.port}
        )
        options.setdefault("connect_timeout", 10)
        options.setdefault("autocommit", True)
        return pymysql.connect(
            user=ep.user if user is None else user,
            password=ep.password if password is None else password,
            database=database,
            charset="utf8mb4",
            **where,
            **options,
        )

    def probe(self) -> None:
        """Check that the admin account works; learn the server flavour."""
        try:
            conn = self.connect()
        except pymysql.MySQLError as exc:
            raise CycleQDError(f"cannot connect to the database server: {exc}") from exc
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
        finally:
            conn.close()
        self.version = str(row[0]) if row else ""
        self.mariadb = "mariadb" in self.version.lower()

    def alive(self) -> bool:
        try:
            self.connect(connect_timeout=2).close()
        except pymysql.MySQLError:
            return False
        return True

    def stop(self) -> None:
        """Nothing to stop for a server we did not start."""


def parse_db_url(url: str) -> Endpoint:
    """``mysql://user:pass@host:port`` (also ``mariadb://``; ``?unix_socket=/path`` allowed)."""
    shown = re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)  # never echo a password
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise CycleQDError(f"db_url {shown!r}: expected mysql://user:password@host:port")
    query = parse_qs(parts.query)
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise CycleQDError(f"db_url {shown!r}: bad port") from exc
    if not parts.username:
        raise CycleQDError(f"db_url {shown!r}: no user name")
    return Endpoint(
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        host=parts.hostname or "localhost",
        port=port,
        unix_socket=query["unix_socket"][0] if "unix_socket" in query else None,
    )


# --- the private MariaDB -------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    """Loaded in the parent: after fork, only async-signal-safe work may happen in the child."""
    global _libc
    if _libc is None:
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _die_with_parent(parent: int) -> None:
    """Runs in the forked child: the kernel kills it when the thread that spawned it ends."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def runtime_base() -> Path:
    """Where private servers keep their throwaway directories (``CYCLEQD_DB_RUNTIME`` overrides)."""
    return Path(os.environ.get("CYCLEQD_DB_RUNTIME") or tempfile.gettempdir()) / "cycleqd-mariadb"


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks: with the pid it names a process unambiguously."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(owner_file: Path) -> bool:
    try:
        pid_text, started = owner_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    return _start_time(pid) == started


def clean_stale(base: Path | None = None) -> list[Path]:
    """Remove the directories (and kill the servers) of private servers whose process is gone.

    Only servers whose command line names their own directory are killed, so an unrelated
    process that reused a pid is never touched.
    """
    base = base or runtime_base()
    removed = []
    if not base.is_dir():
        return removed
    for run_dir in base.iterdir():
        owner = run_dir / "owner"
        if not run_dir.is_dir() or _owner_alive(owner):
            continue
        with contextlib.suppress(OSError):
            if not owner.exists() and time.time() - run_dir.stat().st_mtime < _START_TIMEOUT_S:
                continue  # just created by a starting process that has not written its owner yet
        with contextlib.suppress(OSError, ValueError):
            pid = int((run_dir / "mariadbd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if str(run_dir) in cmdline:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


def _binary(name: str, fallback: str) -> str:
    found = shutil.which(name) or (fallback if Path(fallback).is_file() else None)
    if found is None:
        raise CycleQDError(
            f"{name} not found: install MariaDB (Debian: apt-get install mariadb-server, or "
            "`make sysdeps`), or point the task at an existing server with db_url"
        )
    return found


def _collation(mariadbd: str) -> str:
    """The closest match to MySQL 8's ``utf8mb4_0900_ai_ci`` (UCA, NO PAD, ai/ci)."""
    out = subprocess.run([mariadbd, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"Ver (\d+)\.(\d+)", out.stdout)
    version = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    return "utf8mb4_uca1400_nopad_ai_ci" if version >= (10, 10) else "utf8mb4_unicode_520_nopad_ci"


class PrivateMariaDB(DatabaseServer):
    """A MariaDB server owned by this process, in its own temporary directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.socket = run_dir / "mysqld.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner_pid = os.getpid()
        super().__init__(
            Endpoint(user="root", password="", unix_socket=str(self.socket)), user_host="localhost"
        )

    @classmethod
    def start(cls) -> PrivateMariaDB:
        install_db = _binary("mariadb-install-db", "/usr/bin/mariadb-install-db")
        mariadbd = _binary("mariadbd", "/usr/sbin/mariadbd")
        base = runtime_base()
        base.mkdir(parents=True, exist_ok=True)
        clean_stale(base)
        run_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        (run_dir / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
        server = cls(run_dir)
        try:
            server._install(install_db)
            server._launch(mariadbd)
            server.probe()
        except BaseException:
            server.stop()
            raise
        return server

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; as another user it needs nothing.
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install(self, install_db: str) -> None:
        cmd = [
            install_db,
            "--no-defaults",
            f"--datadir={self.run_dir / 'data'}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--innodb-log-file-size=8M",
            "--innodb-buffer-pool-size=32M",
            *self._user_args(),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if out.returncode != 0:
            raise CycleQDError(
                f"mariadb-install-db failed (exit {out.returncode}): {out.stderr.strip()[-800:]}"
            )

    def _launch(self, mariadbd: str) -> None:
        for sub in ("tmp", "files"):
            (self.run_dir / sub).mkdir()
        cmd = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.run_dir / 'data'}",
            f"--socket={self.socket}",
            f"--pid-file={self.run_dir / 'mariadbd.pid'}",
            f"--log-error={self.run_dir / 'error.log'}",
            f"--tmpdir={self.run_dir / 'tmp'}",
            f"--secure-file-priv={self.run_dir / 'files'}",
            "--skip-networking",
            "--local-infile=0",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--character-set-server=utf8mb4",
            f"--collation-server={_collation(mariadbd)}",
            f"--sql-mode={MYSQL8_SQL_MODE}",
            f"--group-concat-max-len={GROUP_CONCAT_MAX_LEN}",
            f"--max-statement-time={SERVER_STATEMENT_LIMIT_S}",
            "--lock-wait-timeout=60",
            "--max-connections=1000",
            # Throwaway data: durability buys nothing and costs set-up time.
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-log-file-size=8M",
            "--innodb-buffer-pool-size=64M",
            *self._user_args(),
        ]
        _load_libc()
        started = threading.Event()
        failure: list[BaseException] = []
        parent = os.getpid()

        def keeper() -> None:
            # PDEATHSIG fires when the *thread* that forked the child ends, so the server is
            # forked from this thread, which lives exactly as long as the server does.
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # a terminal's Ctrl-C is ours to handle, not its
                    preexec_fn=lambda: _die_with_parent(parent),
                )
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            self.proc.wait()

        threading.Thread(target=keeper, name="mariadbd-keeper", daemon=True).start()
        started.wait()
        if failure:
            raise CycleQDError(f"cannot start mariadbd: {failure[0]}")
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise CycleQDError(f"mariadbd exited at start-up: {self._log_tail()}")
            if self.socket.exists() and self.alive():
                return
            time.sleep(0.02)
        raise CycleQDError(f"mariadbd did not become ready in {_START_TIMEOUT_S:.0f}s")

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.run_dir / "error.log").read_text().splitlines()[-5:])
        except OSError:
            return "(no error log)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server and delete its directory; safe to call more than once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.run_dir, ignore_errors=True)


# --- one server per process (or per db_url) -------------------------------------------------------

_lock = threading.Lock()
_private: PrivateMariaDB | None = None
_external: dict[str, DatabaseServer] = {}
_atexit_registered = False


def get_server(db_url: str | None = None) -> DatabaseServer:
    """The server for ``db_url``, or this process's private MariaDB (started on first use)."""
    global _private, _atexit_registered
    with _lock:
        if db_url:
            if db_url not in _external:
                server = DatabaseServer(parse_db_url(db_url), user_host="%")
                server.probe()
                _external[db_url] = server
            return _external[db_url]
        if _private is not None and _private.owner_pid != os.getpid():
            _private = None  # a forked child: the parent's server is the parent's to stop
        if _private is None or not _private.running():
            if _private is not None:
                _private.stop()
            _private = PrivateMariaDB.start()
            if not _atexit_registered:
                atexit.register(stop_private_server)
                _atexit_registered = True
        return _private


def stop_private_server() -> None:
    """Stop this process's private server, if any (also registered with ``atexit``)."""
    global _private
    with _lock:
        if _private is not None and _private.owner_pid == os.getpid():
            _private.stop()
        _private = None
