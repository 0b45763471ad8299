"""Trace a plain command: `autosandbox learn -- CMD ...`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from autosandbox import interrupts, procs
from autosandbox.errors import UserError, require_tool
from autosandbox.profile import Profile, Subject
from autosandbox.report import QUIET, Reporter
from autosandbox.systemd import runstate
from autosandbox.trace import kernel
from autosandbox.trace.facts import record_facts
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.sources import KernelSources, Traced
from autosandbox.trace.stream import TraceStream
from autosandbox.trace.tracefs import syscall_tracer_available

# Paths need no -s: strace prints them whole. Data buffers stay short, which keeps it fast.
STRACE_OPTIONS = ("-f", "-y", "-q", "-s", "64")
# With tracefs counting the syscall set, ptrace stops only for the calls the recorder reads
# (--seccomp-bpf). Every stop costs (two per request halve a web server's rate), so the
# per-request calls that rarely decide a directive are left out: stat lookups (a path that is
# only looked up) and recvfrom/sendto/sendmsg (peers of unconnected UDP sockets).
# `--tracer full` records those too; validation catches what a missing lookup hides.
FAST_SKIPPED = frozenset({"recvfrom", "sendto", "sendmsg", "stat", "lstat", "newfstatat",
                          "fstatat64", "statx"})
FAST_TRACE_SET = tuple(sorted(READ_CALLS - FAST_SKIPPED))
# strace cannot tell that a new thread or child inherited the seccomp filter until it stops in
# a traced call: until then it stops it on every call (PTRACE_SYSCALL). A worker thread that
# only accepts, reads, writes and waits never would. New tasks of glibc, Go and Rust make one
# of these once, at birth, and never on a hot path: tracing them puts each new task on the
# filter at its first calls. Measured, a 4-thread Python server under `Connection: close`, 3 s:
# 56,172 strace wakeups and 1,093 req/s without them, none and 2,196 req/s with (2,210 untraced).
BIRTH_CALLS = ("set_robust_list", "rseq", "set_tid_address", "sigaltstack")


# Left to the kernel when bpftrace runs (trace/opens.py): a file server's per-request call;
# and the hot calls trace/kernel.py records (accept, setsockopt, fcntl, mmap/mprotect).
KERNEL_OPENS = frozenset({"open", "openat"})


def strace_options(fast: bool, kernel_opens: bool = False,
                   detachable: bool = False) -> tuple[str, ...]:
    """`kernel_opens`: the bpftrace program of opens.py runs (it records kernel.covered() too).
    `detachable`: the tracees may run on after strace is gone (per-connection instances), so
    no --seccomp-bpf: a seccomp filter outlives its tracer, and each call it hands to a tracer
    then fails with ENOSYS (the instance could no longer fork, exec, connect, open...). strace
    stops on every call instead, and prints the same set."""
    if not fast:
        return STRACE_OPTIONS
    left = KERNEL_OPENS | kernel.covered() if kernel_opens else frozenset()
    calls = [n for n in FAST_TRACE_SET if n not in left]
    if detachable:
        return (*STRACE_OPTIONS, "-e", "trace=" + ",".join(["%process", *(f"?{n}" for n in calls)]))
    names = ",".join(["%process", *(f"?{n}" for n in (*calls, *BIRTH_CALLS))])
    return (*STRACE_OPTIONS, "--seccomp-bpf", "-e", f"trace={names}")


@dataclass
class Progress:
    elapsed: float
    duration: float | None
    events: int
    paths: int
    families: list[str]
    capabilities: list[str]
    state: str


@dataclass
class TraceResult:
    profile: Profile
    exit_code: int | None
    interrupted: bool
    partial: bool = False  # cut by a signal, kept (--keep-partial)


def require_strace() -> str:
    return require_tool("strace", "install it with 'apt-get install strace'")


def pipe_shim(fd: int, argv: Sequence[str]) -> list[str]:
    """A shell that waits for a line on pipe `fd` (written once the kernel's tracers follow
    its pid), closes it and becomes `argv` (strace): nothing it runs is missed."""
    return ["/bin/bash", "-c", f'read -r _ <&{fd} || exit 1; exec {fd}<&-; exec "$@"',
            "autosandbox-shim", *argv]


def strace_argv(strace: str, output: Path, argv: Sequence[str], fast: bool = False,
                kernel_opens: bool = False, detachable: bool = False) -> list[str]:
    return [strace, *strace_options(fast, kernel_opens, detachable), "-o", str(output), "--",
            *argv]


def trace_command(
    argv: Sequence[str],
    duration: float | None = None,
    reporter: Reporter = QUIET,
    cwd: str | None = None,
    fast: bool | None = None,
    keep_partial: bool = False,
) -> TraceResult:
    """`fast`: ptrace only the calls the recorder reads and take the syscall set from
    tracefs (default: wherever tracefs allows it). A signal cuts the trace: everything is
    stopped and removed and KeyboardInterrupt raised, or with `keep_partial` the profile so
    far is returned marked partial. Ctrl-C ends a trace without `duration` normally."""
    strace = _command_checked(argv)
    workdir = cwd or os.getcwd()
    profile = Profile(subject=Subject(command=list(argv), cwd=workdir, uid=os.geteuid()))
    profile.add_source("strace")
    recorder = Recorder(profile, workdir, uid=os.geteuid(), gid=os.getegid())
    fast = _fast_tracer(fast)
    sources = KernelSources([recorder], recorder.pids.__contains__, caps=os.geteuid() == 0)
    stack = contextlib.ExitStack()  # the kernel's tracers: stopped once the program is gone
    proc: subprocess.Popen[bytes] | None = None
    stream: TraceStream | None = None
    gate_w = -1
    interrupted = cut = False
    started = time.monotonic()
    try:
        # root: the FIFO goes under the run's own directory, where `reset` finds it
        stream = TraceStream(recorder, fifo_dir=runstate.scratch_dir())
        # bpftrace follows our threads' children from before the fork, and reports opens from
        # strace's exec of the program on: its first open is seen, ours and strace's are not.
        why_not = sources.start(stack, fast, root_pids=_own_threads() if fast else ())
        if why_not is not None:
            profile.warnings.append(why_not)
        # A shell shim waits on a pipe until the tracefs instance follows its pid, then becomes
        # strace: no capability check of the traced program is missed, none of ours is counted.
        gate_r, gate_w = os.pipe()
        shim = pipe_shim(gate_r, strace_argv(strace, stream.fifo, argv, fast,
                                             kernel_opens=sources.opens is not None))
        started = time.monotonic()
        try:
            # strace, and through the watchdog the program it runs, die with us (procs.py)
            proc = procs.spawn(shim, pass_fds=(gate_r,), cwd=workdir)
        finally:
            os.close(gate_r)
        runstate.record_process(proc.pid)
        sources.start_tracefs(proc.pid)
        os.write(gate_w, b"go\n")
        os.close(gate_w)
        gate_w = -1
        interrupted, cut = _window(proc, started, duration, stream, recorder, reporter)
        if proc.poll() is None:
            interrupted = interrupted or duration is not None
            _terminate(proc, grace=2.0 if cut else 5.0)
    except BaseException:
        cut, keep_partial = True, False
        raise
    finally:
        with interrupts.shielded():
            try:
                if gate_w >= 0:
                    os.close(gate_w)
                if proc is not None and proc.poll() is None:
                    _terminate(proc, grace=2.0)
            finally:
                stack.close()
            if cut and not keep_partial and stream is not None:
                stream.close(timeout=2)  # its FIFO goes; nothing is learned from a cut trace
    if cut and not keep_partial:
        raise KeyboardInterrupt
    assert stream is not None and proc is not None
    profile = stream.close()
    sources.finish(profile, [Traced(recorder)], partial=cut)
    profile.subject = replace(profile.subject, duration_s=round(time.monotonic() - started, 3))
    root = recorder.first_pid
    code = recorder.exit_codes.get(root) if root is not None else proc.returncode
    if root is None and proc.returncode not in (0, None):
        raise UserError(f"strace failed to run {argv[0]} (exit {proc.returncode})")
    profile.subject = replace(profile.subject, exit_code=code)
    record_facts(profile)
    if cut:
        mark_partial(profile)
    return TraceResult(profile, code, interrupted, partial=cut)


def _command_checked(argv: Sequence[str]) -> str:
    """strace's path, once the command is known to exist."""
    strace = require_strace()
    if not argv:
        raise UserError("no command given: autosandbox learn -- CMD [ARGS...]")
    if shutil.which(argv[0]) is None:
        raise UserError(f"command not found: {argv[0]}")
    return strace


def _fast_tracer(fast: bool | None) -> bool:
    """None: fast wherever tracefs allows it; True where it does not is an error."""
    usable = os.geteuid() == 0 and syscall_tracer_available()
    if fast and not usable:
        raise UserError("the fast tracer needs root and a usable tracefs (not in a container);"
                        " use --tracer full")
    return usable if fast is None else fast


def _window(proc: subprocess.Popen[bytes], started: float, duration: float | None,
            stream: TraceStream, recorder: Recorder,
            reporter: Reporter) -> tuple[bool, bool]:
    """Trace until the program ends or the window closes: (interrupted, cut)."""
    try:
        _wait(proc, started, duration, stream, recorder, reporter)
    except KeyboardInterrupt:
        # Ctrl-C is how an untimed command's trace ends (README); anything else cuts it
        if duration is None and (interrupts.interrupted() or signal.SIGINT) == signal.SIGINT:
            interrupts.forget()
            return True, False
        return True, True
    return False, False


def mark_partial(profile: Profile) -> None:
    """A profile from a trace cut by a signal (--keep-partial): never mistaken for a whole one."""
    profile.subject = replace(profile.subject, partial=True)
    profile.warnings.append("partial: the trace was interrupted; code paths after that "
                            "moment are missing")


def _wait(proc: subprocess.Popen[bytes], started: float, duration: float | None,
          stream: TraceStream, recorder: Recorder,
          reporter: Reporter) -> None:
    while True:
        elapsed = time.monotonic() - started
        p = recorder.profile
        reporter.progress(Progress(elapsed, duration, stream.events, len(p.paths),
                                   sorted(p.families), sorted(p.capabilities), "running"))
        if duration is not None and elapsed >= duration:
            return
        if procs.wait_exit(proc, 0.5 if duration is None
                           else min(0.5, duration - elapsed + 0.01)):
            return


def _terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the whole traced session, then SIGKILL what is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _own_threads() -> list[int]:
    return sorted(int(t) for t in os.listdir("/proc/self/task"))
