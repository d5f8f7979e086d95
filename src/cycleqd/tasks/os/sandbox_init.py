"""PID 1 inside an OS-task episode (runs with the sandbox's own python3, stdlib only).

Why a process of ours is PID 1: the init of a PID namespace is the one process that the agent's
``kill -9 -1`` or ``kill -9 1`` cannot touch, so the episode survives the agent killing every
process it can see, and something is left to reap orphans (zombies would otherwise pile up and
count against the episode's pids limit). From here the host can (re)start the persistent shell,
interrupt its foreground command, and run AgentBench's "independent" scripts (init and check
scripts, ``docker exec`` in AgentBench) in the same namespaces, file system and cgroup.

Protocol on stdin/stdout, one JSON object per line, strictly request/reply:
  {"op": "spawn_shell"}                    -> {"ok": true, "pid": N}
  {"op": "signal_shell", "sig": N}         -> {"ok": true}
  {"op": "kill_all"}                       -> {"ok": true}   (every process but this one)
  {"op": "exec", "argv": [...], "timeout": s, "limit": n}
                                           -> {"rc": N, "output": "<base64>", "timed_out": b}
  {"op": "shell_alive"}                    -> {"alive": bool}
The shell's stdin/stdout come from the host as two inherited pipe ends (``CQD_SHELL_FDS``); the
host talks to the shell directly and only asks us for signals and restarts.

What the agent can see of us is made to match AgentBench's container (docs/os-execution-model.md):
there PID 1 is the image's ``CMD ["bash"]``, so we call ourselves ``bash`` (``ps -A``,
``ps -ef | grep bash`` and ``pgrep bash`` count PID 1 as they do there), we reap orphans the moment
they die (bash as PID 1 reaps on SIGCHLD; a zombie would be one process too many in a count), and
we give the shell and the independent scripts the environments that ``docker exec`` gives: the
container's ``PATH``, ``HOSTNAME`` and ``HOME``, plus ``TERM=xterm`` for the shell only (it is the
one exec with a terminal).
"""

import base64
import contextlib
import json
import os
import select
import signal
import sys
import time

SHELL_ARGV = ["bash", "--login", "--noediting", "-i"]
RESET_SIGNALS = {
    signal.SIGPIPE,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGXFSZ,
    signal.SIGUSR1,
    signal.SIGUSR2,
}

# What ``docker exec`` gives a process of AgentBench's container; the host sets these for us.
# (Only these: Python's locale coercion adds LC_CTYPE to our own environment, which no process
# in the container has.) The shell is ``docker exec -it ... bash --login``: a terminal, so TERM.
CONTAINER_ENV = ("PATH", "HOSTNAME", "HOME")
SHELL_ENV_EXTRA = {"TERM": "xterm"}

shell_pid = 0
managed = set()  # exec'd scripts whose exit status the host is waiting for
exited = {}  # pid -> wait status, for managed processes only (orphans are just reaped)


def reap():
    global shell_pid
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == shell_pid:
            shell_pid = 0
        if pid in managed:
            managed.discard(pid)
            exited[pid] = status


def set_title(title):
    """Show as ``title`` in ``ps`` (comm and cmdline), as AgentBench's PID 1 ``bash`` does.

    The command line is the argv area of our own memory; overwriting it through /proc/self/mem
    and making its last byte non-NUL is what setproctitle does (the kernel then reports the
    text up to the first NUL). Best effort: a kernel that refuses leaves the real name.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        if end - start >= len(title) + 2:
            data = title + b"\0" * (end - start - len(title) - 1) + b" "
            with open("/proc/self/mem", "r+b", buffering=0) as mem:
                mem.seek(start)
                mem.write(data)
    with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as f:
        f.write(title)


def spawn(argv, fds, env):
    """Start argv in its own session with default signal dispositions; fds = (stdin, out)."""
    stdin_fd, out_fd = fds
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin_fd, 0),
        (os.POSIX_SPAWN_DUP2, out_fd, 1),
        (os.POSIX_SPAWN_DUP2, out_fd, 2),
    ]
    return os.posix_spawnp(
        argv[0],
        argv,
        env,
        file_actions=actions,
        setsid=True,
        setsigdef=RESET_SIGNALS,
        setsigmask=(),
    )


def kill_group(pid, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_group_gone(pgid, deadline):
    """Reap a killed process group completely, so no zombie of it shows up in a later ``ps``."""
    while time.monotonic() < deadline:
        reap()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.005)


def run_exec(req, devnull, env):
    argv = req["argv"]
    timeout = float(req.get("timeout", 60))
    limit = int(req.get("limit", 1 << 20))
    r, w = os.pipe()
    try:
        pid = spawn(argv, (devnull, w), env)
    except OSError as exc:
        os.close(r)
        os.close(w)
        msg = f"{argv[0]}: {exc.strerror}\n".encode()
        return {"rc": 127, "output": base64.b64encode(msg).decode(), "timed_out": False}
    managed.add(pid)
    os.close(w)
    out = bytearray()
    deadline = time.monotonic() + timeout
    timed_out = False
    eof = False
    while not eof:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            kill_group(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([r], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                eof = True
            elif len(out) < limit:
                out += chunk[: limit - len(out)]
        reap()
    os.close(r)
    # The script's own process may outlive its output pipe (a daemonised child kept it open or
    # it closed stdout early); wait for it, within the deadline.
    while pid not in exited:
        if time.monotonic() > deadline:
            timed_out = True
            kill_group(pid, signal.SIGKILL)
        reap()
        if pid not in exited:
            time.sleep(0.01)
    if timed_out:
        wait_group_gone(pid, time.monotonic() + 5)
    status = exited.pop(pid)
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "output": base64.b64encode(bytes(out)).decode(), "timed_out": timed_out}


def reply(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(1, data)
        data = data[n:]


def main():
    global shell_pid
    os.umask(0o022)
    os.chdir("/")
    set_title(b"bash")
    shell_in, shell_out = (int(x) for x in os.environ.pop("CQD_SHELL_FDS").split(","))
    for fd in (shell_in, shell_out):
        os.set_inheritable(fd, False)
    exec_env = {k: os.environ[k] for k in CONTAINER_ENV if k in os.environ}
    shell_env = {**exec_env, **SHELL_ENV_EXTRA}
    devnull = os.open("/dev/null", os.O_RDONLY)
    # SIGCHLD wakes the loop through this pipe, so orphans are reaped at once (a select() that
    # Python restarts after the handler would leave them as zombies until its timeout).
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    buf = b""
    while True:
        reap()
        try:
            ready, _, _ = select.select([0, wake_r], [], [], 1.0)
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 4096):
                    pass
        if 0 not in ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:  # the host went away: take everything down with us
            os.kill(-1, signal.SIGKILL)
            sys.exit(0)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            op = req["op"]
            reap()
            if op == "spawn_shell":
                if shell_pid:
                    kill_group(shell_pid, signal.SIGKILL)
                shell_pid = spawn(SHELL_ARGV, (shell_in, shell_out), shell_env)
                reply({"ok": True, "pid": shell_pid})
            elif op == "signal_shell":
                if shell_pid:
                    kill_group(shell_pid, int(req["sig"]))
                reply({"ok": True})
            elif op == "kill_all":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)
                time.sleep(0.05)
                reap()
                reply({"ok": True})
            elif op == "shell_alive":
                reply({"alive": bool(shell_pid)})
            elif op == "exec":
                reply(run_exec(req, devnull, exec_env))
            else:
                reply({"error": f"unknown op {op!r}"})


if __name__ == "__main__":
    main()
