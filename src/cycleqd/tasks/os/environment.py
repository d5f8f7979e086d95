"""A throwaway Linux machine for one episode: overlay on the cached rootfs, namespaces, one shell.

Layout of one episode, from the host's point of view::

    sh (joins the episode cgroup)
     └ unshare --mount: tmpfs on a private temp dir, overlay(lower=cached rootfs, upper=tmpfs)
        └ bwrap: the overlay as /, fresh /proc and /dev, new pid/ipc/uts/net namespaces,
                 Docker's default capabilities minus the dangerous ones, nosuid everywhere
           └ python3 sandbox_init.py  (PID 1: reaps, (re)starts the shell, runs scripts;
              │                         shows as ``bash``, like the container's CMD)
              ├ bash --login -i       (the agent's one persistent shell)
              └ bash -c / python3 -c  (init and check scripts, one process each)

This is AgentBench's container as the agent and the scripts see it; docs/os-execution-model.md
says which process runs what, with which cwd and environment. Everything the agent writes lands
on the tmpfs, which vanishes with the mount namespace when the episode closes; the cached rootfs
is only ever a read-only lower layer (``/.dockerenv`` is added on the tmpfs, as Docker adds it).
The tmpfs is smaller than the memory limit so that filling the disk gives ENOSPC instead of an
out-of-memory kill.

The shell protocol: each command is sent as ``{ <command>\\n} </dev/null`` followed by a marker
line that prints a random token and ``$?``; the output is everything before the marker. Braces
keep a multi-line command one unit, ``</dev/null`` stops a command from eating the marker. When a
command outlives its timeout the shell's process group gets SIGINT (as Ctrl-C would; background
jobs ignore it, as they do in a shell without job control), and if the shell still does not
answer it is killed and restarted, so the episode always gets a usable shell back.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

from cycleqd.errors import CycleQDError
from cycleqd.tasks.os.cgroup import EpisodeCgroup, Limits

INIT_SCRIPT = Path(__file__).with_name("sandbox_init.py")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default capability set (what AgentBench's containers have) minus MKNOD, SETFCAP and
# SETPCAP, which only serve to escape or to regain dropped capabilities.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# Run once in every new shell: no prompts in the output, no history expansion surprises.
SHELL_SETUP = "PS1=''; PS2=''; PROMPT_COMMAND=''; set +H; unset HISTFILE"
KEEP_BYTES = 64 * 1024  # of one command's output; the agent sees 800 characters at most
_ANSI = re.compile(
    rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]"
)

# Interactive bash without a terminal complains when it restores terminal state after a job died
# of a signal (``yes | head``); the message is an artefact of our pipes, not the agent's command.
_TTY_NOISE = re.compile(
    rb"^bash: \[\d+: \d+ \(\d+\)\] tcsetattr: Inappropriate ioctl for device\r?\n", re.M
)

_LAUNCH = r"""
set -e
for f in $CQD_CGROUP_PROCS; do echo $$ > "$f"; done
ulimit -n "$CQD_NOFILE" 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null || :
exec unshare --mount --propagation private -- sh -ec '
mount -t tmpfs -o "size=$CQD_DISK,mode=0755" cycleqd-os "$CQD_DIR"
mkdir "$CQD_DIR/upper" "$CQD_DIR/work" "$CQD_DIR/root"
mount -t overlay overlay \
  -o "lowerdir=$CQD_LOWER,upperdir=$CQD_DIR/upper,workdir=$CQD_DIR/work" "$CQD_DIR/root"
: > "$CQD_DIR/root/.dockerenv"
exec bwrap --bind "$CQD_DIR/root" / "$@"
' sh "$@"
"""


# Docker's containers get RLIMIT_NOFILE 1048576 (dockerd and containerd run with
# LimitNOFILE=infinity), and AgentBench's data relies on it without saying so: an init line like
# ``echo 123321>/var/x`` is a redirection of fd 123321, which fails under a smaller limit. Raising
# the hard limit needs CAP_SYS_RESOURCE; without it the episode gets the host's hard limit.
DOCKER_NOFILE = 1 << 20


def _nofile() -> int:
    """Docker's open-files limit, capped by what this kernel allows (``fs.nr_open``)."""
    try:
        return min(DOCKER_NOFILE, int(Path("/proc/sys/fs/nr_open").read_text()))
    except (OSError, ValueError):
        return DOCKER_NOFILE


class SandboxDied(Exception):
    """The episode's machine is gone (its PID 1 died, e.g. killed by the OOM killer)."""


@dataclass
class ShellResult:
    """One command in the persistent shell."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    restarted: bool = False
    output_bytes: int = 0


@dataclass
class ExecResult:
    """One independent script (AgentBench's ``execute_independent``)."""

    exit_code: int
    output: str
    timed_out: bool = False


@dataclass
class EnvironmentOptions:
    """Knobs of one episode machine."""

    limits: Limits = field(default_factory=Limits)
    disk_bytes: int = 512 << 20
    command_timeout_s: float = 10.0
    interrupt_grace_s: float = 2.0
    script_timeout_s: float = 60.0
    start_timeout_s: float = 30.0


def clean_output(data: bytes) -> str:
    """Terminal escapes and carriage returns out, as AgentBench's later versions do."""
    data = _ANSI.sub(b"", _TTY_NOISE.sub(b"", data)).replace(b"\x07", b"")
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


class OSEnvironment:
    """One fresh machine with one persistent bash; ``start`` it, ``run`` commands, ``close``."""

    def __init__(self, rootfs: Path, options: EnvironmentOptions | None = None) -> None:
        self.rootfs = Path(rootfs)
        self.options = options or EnvironmentOptions()
        self.hostname = secrets.token_hex(6)
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroup: EpisodeCgroup | None = None
        self._tmp: Path | None = None
        self._ctl_in = self._ctl_out = self._sh_in = self._sh_out = -1
        self._ctl_buf = b""
        self._pending = b""  # shell output that arrived after the last marker
        self._stderr: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Build the machine and wait until its shell answers."""
        if not (self.rootfs / "bin").exists():
            raise CycleQDError(f"OS-task root file system not found or incomplete: {self.rootfs}")
        if any(c in str(self.rootfs) for c in ",:"):
            raise CycleQDError(f"the rootfs path may not contain ',' or ':': {self.rootfs}")
        try:
            self._launch()
            self._spawn_shell()
        except BaseException:
            self.close()
            raise

    def _launch(self) -> None:
        opts = self.options
        self._cgroup = EpisodeCgroup(f"ep-{os.getpid()}-{self.hostname}", opts.limits)
        self._tmp = Path(tempfile.mkdtemp(prefix="cycleqd-os-"))
        sh_in_r, sh_in_w = os.pipe()
        sh_out_r, sh_out_w = os.pipe()
        bwrap = [
            "--dev", "/dev",
            "--proc", "/proc",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
            "--unshare-cgroup-try",
            "--hostname", self.hostname,
            "--die-with-parent", "--new-session", "--as-pid-1",
            "--cap-drop", "ALL",
        ]  # fmt: skip
        for cap in CAPABILITIES:
            bwrap += ["--cap-add", cap]
        bwrap += [
            "--ro-bind", str(INIT_SCRIPT), "/run/cycleqd/init.py",
            "--chdir", "/",
            "--clearenv",
            "--setenv", "PATH", PATH,
            "--setenv", "HOME", "/root",
            "--setenv", "HOSTNAME", self.hostname,
            "--setenv", "CQD_SHELL_FDS", f"{sh_in_r},{sh_out_w}",
            "python3", "-I", "/run/cycleqd/init.py",
        ]  # fmt: skip
        env = {
            "PATH": os.environ.get("PATH", PATH),
            "CQD_CGROUP_PROCS": " ".join(str(p) for p in self._cgroup.procs_files),
            "CQD_DISK": str(opts.disk_bytes),
            "CQD_DIR": str(self._tmp),
            "CQD_LOWER": str(self.rootfs),
            "CQD_NOFILE": str(_nofile()),
        }
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the machine)
        try:
            self._proc = subprocess.Popen(
                ["sh", "-c", _LAUNCH, "cycleqd-os", *bwrap],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                pass_fds=(sh_in_r, sh_out_w),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(sh_in_r)
            os.close(sh_out_w)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._ctl_in = self._proc.stdin.fileno()
        self._ctl_out = self._proc.stdout.fileno()
        self._sh_in, self._sh_out = sh_in_w, sh_out_r
        os.set_blocking(self._sh_in, False)

    def close(self) -> None:
        """Tear everything down: processes, mounts (with their namespace), cgroup, temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]  # init kills all and exits
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            with contextlib.suppress(OSError):
                proc.stdout.close()  # type: ignore[union-attr]
        for fd in (self._sh_in, self._sh_out):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._sh_in = self._sh_out = self._ctl_in = self._ctl_out = -1
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> OSEnvironment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- control channel to PID 1 ----------------------------------------------------------------

    def _diagnostics(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode(errors="replace")

    def _request(self, req: dict[str, object], timeout: float) -> dict[str, object]:
        if self._proc is None:
            raise SandboxDied("the episode machine is closed")
        data = (json.dumps(req) + "\n").encode()
        try:
            os.write(self._ctl_in, data)
        except OSError as exc:
            raise SandboxDied(f"the episode machine is gone ({exc})") from exc
        deadline = time.monotonic() + timeout
        while b"\n" not in self._ctl_buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxDied(f"the episode machine stopped answering ({req['op']})")
            ready, _, _ = select.select([self._ctl_out], [], [], left)
            if ready:
                chunk = os.read(self._ctl_out, 65536)
                if not chunk:
                    raise SandboxDied(f"the episode machine is gone: {self._diagnostics()}")
                self._ctl_buf += chunk
        line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
        return json.loads(line)

    # -- the persistent shell ------------------------------------------------------------------

    def _spawn_shell(self) -> None:
        """(Re)start the shell and wait for it to answer (this is 'ready')."""
        for attempt in range(2):
            self._request({"op": "spawn_shell"}, self.options.start_timeout_s)
            if self._sync(SHELL_SETUP, self.options.start_timeout_s):
                return
            # Could not even start a shell: a fork bomb holds every pid. Clear the machine.
            if attempt == 0:
                self._request({"op": "kill_all"}, self.options.start_timeout_s)
        raise SandboxDied("the shell does not start in the episode machine")

    def _write_shell(self, data: bytes, deadline: float) -> bool:
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _, ready, _ = select.select([], [self._sh_in], [], left)
            if ready:
                try:
                    n = os.write(self._sh_in, data)
                except BlockingIOError:
                    continue
                except BrokenPipeError as exc:
                    raise SandboxDied("the shell's input is closed") from exc
                data = data[n:]
        return True

    def _drained(self, deadline: float) -> bool:
        """Wait until the shell has read everything written to it (FIONREAD on the pipe)."""
        count = bytearray(4)
        while time.monotonic() < deadline:
            fcntl.ioctl(self._sh_in, termios.FIONREAD, count)
            if int.from_bytes(count, sys.byteorder) == 0:
                return True
            time.sleep(0.005)
        return False

    @staticmethod
    def _marker(token: str) -> bytes:
        return f"printf '\\036{token}:%d\\036\\n' \"$?\"\n".encode()

    def _read_until(
        self, token: str, deadline: float, keep: bytearray | None
    ) -> tuple[int | None, int, str]:
        """Read shell output until the marker; returns (exit code or None, bytes seen, why).

        ``why`` is "marker", "timeout" or "dead" (the shell exited). Output before the marker
        goes into ``keep`` (up to KEEP_BYTES), the rest is counted and dropped.
        """
        pattern = re.compile(b"\x1e" + token.encode() + rb":(-?\d+)\x1e\n?")
        buf = self._pending
        self._pending = b""
        seen = 0
        hold = len(token) + 32
        last_check = time.monotonic()
        while True:
            m = pattern.search(buf)
            if m:
                part = buf[: m.start()]
                self._pending = buf[m.end() :]
                if keep is not None and len(keep) < KEEP_BYTES:
                    keep += part[: KEEP_BYTES - len(keep)]
                return int(m.group(1)), seen + len(part), "marker"
            if len(buf) > hold:
                part, buf = buf[:-hold], buf[-hold:]
                seen += len(part)
                if keep is not None and len(keep) < KEEP_BYTES:
                    keep += part[: KEEP_BYTES - len(keep)]
            left = deadline - time.monotonic()
            if left <= 0:
                self._pending = b""
                if keep is not None and len(keep) < KEEP_BYTES:
                    keep += buf[: KEEP_BYTES - len(keep)]
                return None, seen + len(buf), "timeout"
            ready, _, _ = select.select([self._sh_out], [], [], min(left, 0.25))
            if ready:
                buf += os.read(self._sh_out, 1 << 16)
            elif time.monotonic() - last_check >= 0.25:
                last_check = time.monotonic()
                if not self._request({"op": "shell_alive"}, 10)["alive"]:
                    # Drain what the shell wrote before dying.
                    while select.select([self._sh_out], [], [], 0)[0]:
                        chunk = os.read(self._sh_out, 1 << 16)
                        if not chunk:
                            break
                        buf += chunk
                    if keep is not None and len(keep) < KEEP_BYTES:
                        keep += buf[: KEEP_BYTES - len(keep)]
                    return None, seen + len(buf), "dead"

    def _sync(self, setup: str, timeout: float) -> bool:
        """Send ``setup`` plus a marker and wait for it; discards everything before it."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + timeout
        data = ("\n" + setup + "\n").encode() + self._marker(token)
        if not self._write_shell(data, deadline):
            return False
        _, _, why = self._read_until(token, deadline, None)
        return why == "marker"

    def run(
        self, command: str, timeout: float | None = None, *, terminal: bool = False
    ) -> ShellResult:
        """Run one command in the persistent shell, as the agent's ``Act: bash`` does.

        By default the command's stdin is /dev/null, so nothing it runs can swallow the marker or
        the agent's next commands (AgentBench's prompt forbids input operations; there a command
        that reads the terminal eats everything typed after it). ``terminal=True`` is for a
        sample's ``start``, which AgentBench types into the shell's terminal: a program that reads
        the terminal, such as ``start: "... && su - jack"``, then receives what is typed after it,
        so the agent's commands run in jack's shell. The marker is sent only once the shell has
        read the command (bash reads ahead from a pipe), so it reaches whoever reads next.
        """
        timeout = self.options.command_timeout_s if timeout is None else timeout
        token = secrets.token_hex(8)
        redirect = "" if terminal else " </dev/null"
        framed = ("{\n" + command + "\n}" + redirect + "\n").encode()
        marker = self._marker(token)
        deadline = time.monotonic() + timeout
        keep = bytearray()
        if terminal:
            sent = (
                self._write_shell(framed, deadline)
                and self._drained(deadline)
                and self._write_shell(marker, deadline)
            )
        else:
            sent = self._write_shell(framed + marker, deadline)
        if not sent:
            code, seen, why = None, 0, "timeout"
        else:
            code, seen, why = self._read_until(token, deadline, keep)
        result = ShellResult(output=clean_output(bytes(keep)), exit_code=code, output_bytes=seen)
        if why == "marker":
            return result
        if why == "timeout":
            result.timed_out = True
            self._request({"op": "signal_shell", "sig": int(signal.SIGINT)}, 10)
            if self._sync("", self.options.interrupt_grace_s):
                return result
        # The shell died, or ignores SIGINT and will not come back: start a fresh one.
        result.restarted = True
        self.restarts += 1
        self._spawn_shell()
        return result

    # -- independent scripts -------------------------------------------------------------------

    def exec(
        self,
        language: str,
        code: str,
        args: tuple[str, ...] | list[str] = (),
        timeout: float | None = None,
    ) -> ExecResult:
        """Run a script beside the shell (AgentBench's ``execute_independent``).

        Like ``docker exec`` without a terminal: a process of its own (``bash -c code -- args`` or
        ``python3 -c code args``), cwd ``/``, the container's environment, stdin /dev/null, stdout
        and stderr merged. It is done when its output closes, so background jobs that keep the
        output open are waited for, as docker does; past ``timeout`` (docker has none) they are
        killed and reaped; the exit code is the script's own (-9 if it was still running).
        """
        timeout = self.options.script_timeout_s if timeout is None else timeout
        if language == "bash":
            argv = ["bash", "-c", code]
            if args:
                argv += ["--", *args]
        elif language == "python":
            argv = ["python3", "-c", code, *args]
        else:
            raise CycleQDError(f"unsupported script language {language!r} (bash or python)")
        reply = self._request(
            {"op": "exec", "argv": argv, "timeout": timeout, "limit": 1 << 20}, timeout + 30
        )
        return ExecResult(
            exit_code=int(reply["rc"]),  # type: ignore[call-overload]
            output=clean_output(base64.b64decode(str(reply["output"]))),
            timed_out=bool(reply["timed_out"]),
        )
