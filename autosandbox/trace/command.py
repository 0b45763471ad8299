"""Trace a plain command: `autosandbox learn -- CMD ...`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autosandbox.errors import UserError, require_tool
from autosandbox.profile import Profile
from autosandbox.trace import opens
from autosandbox.trace.capabilities import NOISY_KERNEL_CAPS
from autosandbox.trace.opens import OpenTracer
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.strace_parser import DETAILED
from autosandbox.trace.stream import TraceStream
from autosandbox.trace.tracefs import (
    CapabilityTracer,
    SyscallSetTracer,
    cap_capable_available,
    syscall_tracer_available,
)

# Paths need no -s: strace prints them whole. Data buffers stay short, which keeps it fast.
STRACE_OPTIONS = ("-f", "-y", "-q", "-s", "64")
# With tracefs counting the syscall set, ptrace stops only for the calls the recorder reads
# (--seccomp-bpf). Every stop costs (two per request halve a web server's rate), so the
# per-request calls that rarely decide a directive are left out: stat lookups (a path that is
# only looked up) and recvfrom/sendto/sendmsg (peers of unconnected UDP sockets).
# `--tracer full` records those too; validation catches what a missing lookup hides.
FAST_SKIPPED = frozenset({"recvfrom", "sendto", "sendmsg", "stat", "lstat", "newfstatat",
                          "fstatat64", "statx"})
FAST_TRACE_SET = tuple(sorted(DETAILED - FAST_SKIPPED))


# Left to the kernel when bpftrace reports opens (trace/opens.py): a file server's per-request call.
KERNEL_OPENS = frozenset({"open", "openat"})


def strace_options(fast: bool, kernel_opens: bool = False) -> tuple[str, ...]:
    if not fast:
        return STRACE_OPTIONS
    calls = [n for n in FAST_TRACE_SET if not (kernel_opens and n in KERNEL_OPENS)]
    names = ",".join(["%process", *(f"?{n}" for n in calls)])
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


def require_strace() -> str:
    return require_tool("strace", "install it with 'apt-get install strace'")


def strace_argv(strace: str, output: Path, argv: Sequence[str], fast: bool = False,
                kernel_opens: bool = False) -> list[str]:
    return [strace, *strace_options(fast, kernel_opens), "-o", str(output), "--", *argv]


def start_open_tracer(root_pids: Sequence[int] = (), gate_prefix: str | None = None,
                      ) -> tuple[OpenTracer | None, str | None]:
    """bpftrace reporting opens, or None and why not (strace then stops on opens)."""
    if not opens.available():
        why = ("bpftrace is not installed" if opens.bpftrace_path() is None
               else "the kernel's syscall tracepoints are not usable here")
        return None, f"opens were traced by strace ({why}): slower under load"
    try:
        return OpenTracer(root_pids, gate_prefix), None
    except (OSError, ValueError) as exc:
        return None, f"opens were traced by strace: {exc}"


def add_kernel_opens(profile: Profile, tracer: OpenTracer, recorders: Sequence[Recorder]) -> None:
    """Each open of a closed `tracer` goes to the recorder of the process that made it (one
    per Exec line); `profile` gets the source and the tracer's warnings."""
    profile.add_source("bpftrace:open")
    profile.warnings.extend(tracer.warnings)
    for rec in tracer.records:
        errno_name = rec.errno_name
        for recorder in recorders:
            if recorder.opened(rec.tid, rec.path, rec.dir_path, rec.flags_text(), errno_name):
                break


def add_kernel_capabilities(profile: Profile, granted: dict[str, int]) -> None:
    """Granted checks become needs; the known-noisy ones only when a syscall corroborates."""
    for cap, count in sorted(granted.items()):
        if cap in NOISY_KERNEL_CAPS and cap not in profile.capabilities:
            profile.warnings.append(
                f"ignored {count} kernel checks of {cap}: made for memory accounting, "
                "no syscall needing it was seen")
            continue
        profile.add_cap(cap, f"kernel granted {count} checks", count)


def add_syscall_set(profile: Profile, names: set[str]) -> None:
    """Calls tracefs saw but strace was not asked to stop on: in the set, counted once."""
    profile.add_source("tracefs:raw_syscalls")
    for name in names:
        profile.syscalls.setdefault(name, 1)


def trace_command(
    argv: Sequence[str],
    duration: float | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cwd: str | None = None,
    fast: bool | None = None,
) -> TraceResult:
    """`fast`: ptrace only the calls the recorder reads and take the syscall set from
    tracefs (default: wherever tracefs allows it)."""
    strace = require_strace()
    if not argv:
        raise UserError("no command given: autosandbox learn -- CMD [ARGS...]")
    if shutil.which(argv[0]) is None:
        raise UserError(f"command not found: {argv[0]}")
    workdir = cwd or os.getcwd()
    profile = Profile(subject={"command": list(argv), "cwd": workdir, "uid": os.geteuid()})
    profile.add_source("strace")
    recorder = Recorder(profile, workdir, uid=os.geteuid(), gid=os.getegid())
    if fast is None:
        fast = os.geteuid() == 0 and syscall_tracer_available()
    elif fast and not (os.geteuid() == 0 and syscall_tracer_available()):
        raise UserError("the fast tracer needs root and a usable tracefs (not in a container);"
                        " use --tracer full")
    systracer: SyscallSetTracer | None = None
    stream = TraceStream(recorder)
    use_caps = os.geteuid() == 0 and cap_capable_available()
    profile.add_source("tracefs:cap_capable" if use_caps else "syscall-inference")

    # bpftrace follows our threads' children from before the fork, and reports opens from
    # strace's exec of the program on: its first open is seen, ours and strace's are not.
    open_tracer: OpenTracer | None = None
    if fast:
        open_tracer, why_not = start_open_tracer(root_pids=_own_threads())
        if why_not is not None:
            profile.warnings.append(why_not)
    # A shell shim waits on a pipe until the tracefs instance follows its pid, then becomes
    # strace: no capability check of the traced program is missed, none of ours is counted.
    gate_r, gate_w = os.pipe()
    shim = ["/bin/bash", "-c", f'read -r _ <&{gate_r}; exec {gate_r}<&-; exec "$@"',
            "autosandbox-shim", *strace_argv(strace, stream.fifo, argv, fast,
                                             kernel_opens=open_tracer is not None)]
    started = time.monotonic()
    proc = subprocess.Popen(shim, pass_fds=(gate_r,), cwd=workdir, start_new_session=True)
    os.close(gate_r)
    interrupted = False
    tracer: CapabilityTracer | None = None
    try:
        with contextlib.ExitStack() as stack:
            if use_caps:
                tracer = stack.enter_context(
                    CapabilityTracer(proc.pid, ignore_pids=frozenset({proc.pid})))
            if fast:
                systracer = stack.enter_context(
                    SyscallSetTracer(proc.pid, is_program=recorder.pids.__contains__))
            os.write(gate_w, b"go\n")
            os.close(gate_w)
            gate_w = -1
            try:
                _wait(proc, started, duration, stream, recorder, on_progress)
            except KeyboardInterrupt:
                interrupted = True
            if proc.poll() is None:
                interrupted = interrupted or duration is not None
                _terminate(proc)
    finally:
        if gate_w >= 0:
            os.close(gate_w)
        if proc.poll() is None:
            _terminate(proc)
        if open_tracer is not None:
            open_tracer.close()
    profile = stream.close()
    if open_tracer is not None:
        add_kernel_opens(profile, open_tracer, [recorder])
    if tracer is not None:
        add_kernel_capabilities(profile, tracer.granted)
    if systracer is not None:
        add_syscall_set(profile, systracer.syscalls_for(recorder.pids))
    profile.subject["duration_s"] = round(time.monotonic() - started, 3)
    root = recorder.first_pid
    code = recorder.exit_codes.get(root) if root is not None else proc.returncode
    if root is None and proc.returncode not in (0, None):
        raise UserError(f"strace failed to run {argv[0]} (exit {proc.returncode})")
    profile.subject["exit_code"] = code
    return TraceResult(profile, code, interrupted)


def _wait(proc: subprocess.Popen[bytes], started: float, duration: float | None,
          stream: TraceStream, recorder: Recorder,
          on_progress: Callable[[Progress], None] | None) -> None:
    while True:
        elapsed = time.monotonic() - started
        if on_progress is not None:
            p = recorder.profile
            on_progress(Progress(elapsed, duration, stream.events, len(p.paths),
                                 sorted(p.families), sorted(p.capabilities), "running"))
        if duration is not None and elapsed >= duration:
            return
        try:
            proc.wait(timeout=0.5 if duration is None else min(0.5, duration - elapsed + 0.01))
            return
        except subprocess.TimeoutExpired:
            continue


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole traced session, then SIGKILL what is left after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _own_threads() -> list[int]:
    return sorted(int(t) for t in os.listdir("/proc/self/task"))
