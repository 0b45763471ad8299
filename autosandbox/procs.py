"""Processes we start die with us, at any moment, start-up included.

Two lines of defence:
- each helper gets SIGKILL as its parent-death signal (set before it execs; SIGTERM could be
  caught or lost while bpftrace is starting, SIGKILL cannot; BPF programs and tracepoints
  detach when the killed process's file descriptors close);
- a watchdog process reads a pipe from us: on end-of-file (we are gone, however) it SIGKILLs
  every process it was told of, and the whole session each of them leads (strace's tracee, an
  exercise's curl), each verified by pid and start time, never by name. Helpers announce
  themselves from the child before exec, and the watchdog also polls our children, so nothing
  we start escapes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: no dlopen in a child
_prctl = _libc.prctl

_WATCHDOG = os.path.join(os.path.dirname(__file__), "watchdog.py")

_watchdog: dict[str, int] = {}


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks after boot): a pid is reused, this is not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def now_ticks() -> int:
    """The clock start_time() counts in (ticks after boot), now."""
    with open("/proc/uptime", "rb") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def alive(pid: int, started: int | None) -> bool:
    """Whether `pid` is still the process that started at `started` (and not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != b"Z" and (started is None or int(fields[19]) == started)


def kill_tree(pid: int, started: int | None) -> bool:
    """SIGKILL `pid` (if it is still the process that started at `started`) and the members of
    the session it led that started after it. True if anything was killed."""
    killed = False
    # While a member lives its session id is not reused as a pid: members of a dead leader
    # are ours. A pid alive with another start time was reused: its session is not ours.
    ours = alive(pid, started) or not os.path.exists(f"/proc/{pid}")
    if started is not None and ours:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == pid and int(fields[19]) >= started and fields[0] != b"Z":
                with contextlib.suppress(OSError):
                    os.kill(int(name), signal.SIGKILL)
                    killed = True
    if alive(pid, started):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed = True
    return killed


def ensure_watchdog() -> int | None:
    """Start the watchdog once per process (its pid), or None where it cannot run."""
    if _watchdog.get("owner") == os.getpid():
        return _watchdog["pid"]
    r, w = os.pipe()  # both ends close-on-exec; the child gets `r` as its stdin
    try:
        proc = subprocess.Popen([sys.executable, "-S", _WATCHDOG, str(os.getpid())],
                                stdin=r, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    _watchdog.update(owner=os.getpid(), pid=proc.pid, fd=w)
    # reaped by nobody until we end: it must outlive us, so it is never waited for here
    proc.returncode = 0  # keep subprocess from warning about it at exit
    return proc.pid


def child_setup(extra: Callable[[], None] | None = None) -> Callable[[], None]:
    """A `preexec_fn`: death signal SIGKILL, announce ourselves to the watchdog, and bail out
    if the parent is already gone (the death signal would never come)."""
    parent = os.getpid()
    fd = _watchdog.get("fd", -1) if _watchdog.get("owner") == parent else -1

    def setup() -> None:
        if extra is not None:
            extra()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.write(fd, _announcement())
        if os.getppid() != parent:
            os._exit(1)
    return setup


def _announcement() -> bytes:
    """`PID SESSION START` of the calling process, from its own /proc entry: the watchdog may
    read it only after this process died (the death signal is quick), and must still know
    the session it led, whose members it kills."""
    pid = os.getpid()
    try:
        fd = os.open("/proc/self/stat", os.O_RDONLY)
        try:
            fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
        finally:
            os.close(fd)
        return b"%d %d %d\n" % (pid, int(fields[3]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return b"%d\n" % pid  # the watchdog reads the rest from /proc, if it is still there


def spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Popen in a session of its own that dies with us (see the module's docstring)."""
    ensure_watchdog()
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
        argv, preexec_fn=child_setup(), start_new_session=True, **kwargs)
    return proc


def spawn_reader(argv: list[str], env: dict[str, str], encoding: str,
                 setup: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """spawn() for a long-lived helper we read (bpftrace): stdout and stderr are pipes of
    text in `encoding`, `setup` runs in the child before exec (a raised rlimit)."""
    ensure_watchdog()
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True, encoding=encoding, preexec_fn=child_setup(setup),
                            start_new_session=True)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `proc` ended within `timeout` s. Waits in the kernel, on a pidfd: Popen.wait's
    timeout polls every 50 ms, which woke the learner 20 times a second on the CPU of the
    server it traces."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped, or a kernel before 5.3
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        return proc.poll() is not None
    try:
        select.select([fd], [], [], max(0.0, timeout))
    finally:
        os.close(fd)
    return proc.poll() is not None
