"""Trace a systemd service: wrap its Exec lines in strace through a runtime drop-in, restart it,
let the real workload run, then put the unit back exactly as it was, whatever happens.

`strace -D` runs the tracer as a detached grandchild, so the process systemd forked is still the
service's own: Type=forking, notify, PIDFile= and MainPID tracking behave as without tracing.
Each Exec line writes into a FIFO of its own (two tracers never interleave their lines).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from autosandbox import unitfile
from autosandbox.errors import UserError
from autosandbox.profile import Profile
from autosandbox.systemd.dropins import (
    TRACE_DROPIN,
    dropin_path,
    remove_dropin,
    unit_lock,
    unit_state_dir,
    write_dropin,
)
from autosandbox.systemd.manager import ExecLine, Manager, ServiceInfo, check_unit_name
from autosandbox.trace import audit
from autosandbox.trace.command import (
    Progress,
    add_kernel_capabilities,
    add_kernel_opens,
    add_syscall_set,
    require_strace,
    start_open_tracer,
    strace_options,
)
from autosandbox.trace.gate import GateServer, shim_script
from autosandbox.trace.opens import OpenTracer
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.stream import TraceStream
from autosandbox.trace.tracefs import (
    CapabilityTracer,
    SyscallSetTracer,
    cap_capable_available,
    syscall_tracer_available,
)


@dataclass
class UnitTraceResult:
    profile: Profile
    info: ServiceInfo
    notes: list[str] = field(default_factory=list)
    started_ok: bool = True


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("learning a unit needs root (it installs a drop-in and restarts the "
                        "unit): run with sudo")


def trace_dropin(info: ServiceInfo, fifos: dict[ExecLine, Path], strace: str,
                 gates: GateServer | None = None, kernel_opens: bool = False) -> str:
    """With `gates`, each line starts as a shim that waits until tracefs follows it, and strace
    stops only on the calls the recorder reads (the fast tracer); with `kernel_opens` not on
    opens either (bpftrace reports them)."""
    lines = unitfile.comment(
        f"autosandbox: tracing {info.name}. Removed when learning ends; if it is left over, "
        f"run: autosandbox reset {info.name}")
    lines += ["[Service]"]
    lines += unitfile.comment("strace needs ptrace(), which the unit's own filter may forbid; "
                              "the unit's filter is kept in the learned drop-in")
    lines.append("SystemCallFilter=")
    for kind in dict.fromkeys(e.kind for e in info.exec_lines):
        lines.append(f"{kind}=")
        for e in (x for x in info.exec_lines if x.kind == kind):
            shim: list[str] = []
            if gates is not None:
                i = info.exec_lines.index(e)
                shim = ["/bin/sh", "-c", shim_script(gates.control, gates.gates[i], i),
                        "autosandbox-shim"]
            # The unit's own words, as systemd holds them: `$VAR` stays for systemd to expand.
            words = [unitfile.exec_arg(w) for w in (*shim, strace, "-D",
                                                     *strace_options(gates is not None,
                                                                    kernel_opens), "-o",
                                                     str(fifos[e]), "--", e.path)]
            words += [unitfile.exec_arg(a, expand_env=True) for a in e.argv[1:]]
            lines.append(f"{kind}={e.prefix()}{' '.join(words)}")
    return unitfile.join_lines(lines)


def _uid_of(info: ServiceInfo) -> int:
    if info.dynamic_user:
        return 65534
    if not info.user:
        return 0
    try:
        return pwd.getpwnam(info.user).pw_uid
    except KeyError:
        return int(info.user) if info.user.isdigit() else 65534


def existing_settings(info: ServiceInfo, exclude: Path) -> dict[str, str]:
    """Directives the unit's own files set (fragment, then drop-ins; last one wins)."""
    out: dict[str, str] = {}
    for path in [info.fragment_path, *info.dropin_paths]:
        if not path or Path(path) == exclude:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for key, value in unitfile.parse(text):
            if value:
                out[key] = value
            else:
                out.pop(key, None)
    return out


def unit_text(info: ServiceInfo, exclude: Path) -> str:
    """The unit as systemd reads it (fragment plus drop-ins), for offline checks."""
    parts = []
    for path in [info.fragment_path, *info.dropin_paths]:
        if path and Path(path) != exclude:
            with contextlib.suppress(OSError):
                parts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the unit is always restored."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def reset_unit(unit: str) -> list[str]:
    """Undo a trace (or trial) drop-in left behind by a killed autosandbox."""
    from autosandbox.systemd.dropins import TRIAL_DROPIN
    require_root()
    check_unit_name(unit)
    mgr = Manager()
    mgr.info(unit)
    done = [f"removed stale audit rule: {r}" for r in audit.sweep_stale_rules()]
    with unit_lock(unit):
        for name in (TRACE_DROPIN, TRIAL_DROPIN):
            if remove_dropin(dropin_path(unit, name)):
                done.append(f"removed {dropin_path(unit, name)}")
        # the killed run's FIFOs (its strace went with it: a FIFO without reader)
        for stale in unit_state_dir(unit).glob("autosandbox-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if done:
            mgr.reload()
            state, _, _, _ = mgr.state(unit)
            if state in ("active", "activating", "reloading", "failed"):
                mgr.reset_failed(unit)
                done.append(f"restarted {unit}: {mgr.restart(unit)}")
    return done


def trace_unit(unit: str, duration: float, exercise: str | None = None,
               on_progress: Callable[[Progress], None] | None = None,
               fast: bool | None = None) -> UnitTraceResult:
    require_root()
    check_unit_name(unit)
    strace = require_strace()
    mgr = Manager()
    info = mgr.info(unit)
    if not any(e.kind == "ExecStart" for e in info.exec_lines):
        raise UserError(f"{unit} has no ExecStart= to trace")
    dropin = dropin_path(unit, TRACE_DROPIN)
    with unit_lock(unit), terminate_as_interrupt():
        if dropin.exists():
            raise UserError(f"a trace drop-in from an earlier run is still installed ({dropin}):"
                            f" run 'autosandbox reset {unit}' first")
        return _trace(mgr, info, strace, dropin, duration, exercise, on_progress, fast)


def _trace(mgr: Manager, info: ServiceInfo, strace: str, dropin: Path, duration: float,
           exercise: str | None, on_progress: Callable[[Progress], None] | None,
           fast: bool | None) -> UnitTraceResult:
    unit = info.name
    was_running = info.running
    uid = _uid_of(info)
    cwd = info.working_directory if info.working_directory.startswith("/") else "/"
    state_dir = unit_state_dir(unit)
    streams: dict[ExecLine, TraceStream] = {}
    notes: list[str] = []
    tracer: CapabilityTracer | None = None
    if fast is None:
        fast = syscall_tracer_available()
    elif fast and not syscall_tracer_available():
        raise UserError("the fast tracer needs a usable tracefs (not in a container); "
                        "use --tracer full")
    systracer: SyscallSetTracer | None = None
    gates: GateServer | None = None
    open_tracer: OpenTracer | None = None
    audit_why = audit.unavailable_reason()
    audit_rules: audit.AuditRules | None = None
    exercise_proc: subprocess.Popen[bytes] | None = None
    started_ok = True
    begun = time.monotonic()
    try:
        for e in info.exec_lines:
            profile = Profile(subject={"unit": unit, "exec": e.kind})
            stream = TraceStream(Recorder(profile, cwd, uid=uid), fifo_dir=state_dir)
            os.chmod(stream.dir, 0o711)
            if uid != 0 and "privileged" not in e.flags:
                os.chmod(stream.fifo, 0o622)  # the tracer runs as the service's user
            streams[e] = stream
        if cap_capable_available():
            tracer = CapabilityTracer(None)
            tracer.__enter__()
        if fast:
            def is_program(pid: int) -> bool:
                return any(pid in s.recorder.pids for s in list(streams.values()))

            systracer = SyscallSetTracer(None, is_program).__enter__()
            gates = GateServer(state_dir, len(info.exec_lines), systracer.add_pid,
                               world_writable=uid != 0)
            # The shims open their gates: that is how bpftrace learns the unit's processes.
            open_tracer, why_not = start_open_tracer(gate_prefix=f"{state_dir}/gate-")
            if why_not is not None:
                notes.append(why_not)
        if audit_why is None:
            try:
                audit_rules = audit.AuditRules(f"autosandbox-learn-{os.getpid()}").__enter__()
            except OSError as exc:
                audit_why = str(exc)
        write_dropin(dropin, trace_dropin(info, {e: s.fifo for e, s in streams.items()},
                                          strace, gates, kernel_opens=open_tracer is not None))
        mgr.reload()
        state = mgr.restart(unit)
        begun = time.monotonic()  # --duration counts traced time, not the tracers' start-up
        if state != "active" and info.type != "oneshot":
            started_ok = False
            notes.append(f"{unit} did not start under strace (state {state}); "
                         "see journalctl -u " + unit)
        exercise_ok = False
        exercise_runs = 0
        while started_ok:
            # The workload runs until it succeeds once: a service may listen a moment after
            # systemd calls it active, and a workload that never reached it taught nothing.
            if exercise and not exercise_ok and (exercise_proc is None
                                                 or exercise_proc.poll() is not None):
                if exercise_proc is not None:
                    exercise_ok = exercise_proc.returncode == 0
                if not exercise_ok:
                    exercise_runs += 1
                    exercise_proc = subprocess.Popen(
                        ["/bin/sh", "-c", exercise], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, start_new_session=True)
            elapsed = time.monotonic() - begun
            st, sub, _, _ = mgr.state(unit)
            if on_progress is not None:
                merged_paths = sum(len(s.recorder.profile.paths) for s in streams.values())
                fams = sorted({f for s in streams.values() for f in s.recorder.profile.families})
                caps = sorted({c for s in streams.values()
                               for c in s.recorder.profile.capabilities})
                on_progress(Progress(elapsed, duration, sum(s.events for s in streams.values()),
                                     merged_paths, fams, caps, f"{st}/{sub}"))
            if elapsed >= duration:
                break
            if st in ("failed", "inactive") and info.type != "oneshot":
                notes.append(f"{unit} stopped while it was traced ({st}/{sub})")
                break
            time.sleep(min(0.5, max(0.05, duration - elapsed)))
        if exercise and exercise_proc is not None and exercise_proc.poll() == 0:
            exercise_ok = True
        if exercise and not exercise_ok:
            notes.append(f"the --exercise command never succeeded while learning "
                         f"({exercise_runs} runs): the profile misses its code paths")
    except KeyboardInterrupt:
        notes.append("interrupted: the unit was restored; the profile covers what ran so far")
    finally:
        if exercise_proc is not None and exercise_proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(exercise_proc.pid, signal.SIGTERM)
            exercise_proc.wait(10)
        try:
            _restore(mgr, info, dropin, was_running, notes)
        finally:
            if tracer is not None:
                tracer.__exit__(None, None, None)
            if gates is not None:
                gates.close()
            if open_tracer is not None:
                open_tracer.close()
            if systracer is not None:
                systracer.__exit__(None, None, None)
            if audit_rules is not None:
                audit_rules.__exit__(None, None, None)
    profile = Profile(subject={"unit": unit, "uid": uid, "user": info.user or None,
                               "type": info.type, "cwd": cwd,
                               "exec": [[e.kind, e.path, *e.argv[1:]] for e in info.exec_lines],
                               "duration_s": round(time.monotonic() - begun, 3)})
    profile.add_source("strace")
    pids: set[int] = set()
    parts = [stream.close(timeout=10) for stream in streams.values()]
    if open_tracer is not None:
        add_kernel_opens(profile, open_tracer, [s.recorder for s in streams.values()])
    for stream, part in zip(streams.values(), parts, strict=True):
        pids |= stream.recorder.pids
        part.subject = {}
        profile.merge(part)
    profile.subject.pop("merged", None)
    if systracer is not None:
        add_syscall_set(profile, systracer.syscalls_for(pids))
        if gates is not None and gates.errors:
            profile.warnings.append("tracefs could not follow some processes, the syscall "
                                    f"set may miss calls: {'; '.join(gates.errors[:3])}")
    if audit_rules is not None:
        profile.add_source("audit")
        for ev in audit_rules.events():
            if ev.pid in pids:
                profile.add_failed_path(ev.path or f"syscall:{ev.syscall}", ev.errno)
    else:
        notes.append(f"audit was not used: {audit_why}")
    if tracer is not None:
        profile.add_source("tracefs:cap_capable")
        add_kernel_capabilities(profile, tracer.granted_for(pids))
    else:
        profile.add_source("syscall-inference")
    with contextlib.suppress(OSError):
        state_dir.rmdir()
    return UnitTraceResult(profile, info, notes, started_ok)


def _restore(mgr: Manager, info: ServiceInfo, dropin: Path, was_running: bool,
             notes: list[str]) -> None:
    """Remove the trace drop-in and bring the unit back to the state it was found in."""
    unit = info.name
    remove_dropin(dropin)
    mgr.reload()
    if was_running:
        mgr.reset_failed(unit)
        state = mgr.restart(unit)
        if state != "active":
            notes.append(f"after restoring, {unit} is {state} (it was active before learning)")
    else:
        mgr.stop(unit)
        mgr.reset_failed(unit)
