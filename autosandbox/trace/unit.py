"""Trace a systemd service: wrap its Exec lines in strace through a runtime drop-in, restart it,
let the real workload run, then put the unit back exactly as it was, whatever happens.

`strace -D` runs the tracer as a detached grandchild, so the process systemd forked is still the
service's own: Type=forking, notify, PIDFile= and MainPID tracking behave as without tracing.
Each Exec line writes into a FIFO of its own (two tracers never interleave their lines).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from autosandbox import interrupts, procs, unitfile
from autosandbox.errors import UserError
from autosandbox.profile import Profile
from autosandbox.systemd import analyze, runstate
from autosandbox.systemd.dropins import (
    APPLIED_DROPIN,
    STATE_DIR,
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
    kernel_open_sink,
    mark_partial,
    require_strace,
    start_open_tracer,
    strace_options,
)
from autosandbox.trace.facts import record_facts
from autosandbox.trace.gate import GateServer, shim_script, slice_cgroup
from autosandbox.trace.opens import OpenTracer
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.stream import TraceStream
from autosandbox.trace.tracefs import (
    CapabilityTracer,
    SyscallSetTracer,
    cap_capable_available,
    in_initial_pid_namespace,
    syscall_tracer_available,
    tracefs_root,
)


@dataclass
class UnitTraceResult:
    profile: Profile
    info: ServiceInfo
    notes: list[str] = field(default_factory=list)
    started_ok: bool = True
    partial: bool = False  # cut by a signal and kept (--keep-partial)


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("learning a unit needs root (it installs a drop-in and restarts the "
                        "unit): run with sudo")


def trace_dropin(info: ServiceInfo, fifos: dict[ExecLine, Path], strace: str,
                 gates: GateServer | None = None, kernel_opens: bool = False,
                 fast: bool | None = None) -> str:
    """With `gates`, each line starts as a shim that announces its pid and waits until it is
    followed (gate.py). With `fast` (default: with gates), strace stops only on the calls the
    recorder reads; with `kernel_opens` not on opens either (bpftrace reports them)."""
    fast = gates is not None if fast is None else fast
    lines = unitfile.comment(
        f"autosandbox: tracing {info.name}. Removed when learning ends; if it is left over, "
        f"run: autosandbox reset {info.name}")
    lines += ["[Service]"]
    lines += unitfile.comment("strace needs ptrace(), which the unit's own filter may forbid; "
                              "the unit's filter is kept in the learned drop-in")
    lines.append("SystemCallFilter=")
    if existing_settings(info, dropin_path(info.name, TRACE_DROPIN)).get(
            "CapabilityBoundingSet"):
        # Only where the unit sets its own: a first assignment replaces the full set.
        lines += unitfile.comment(
            "strace runs inside the unit's bounding set: without CAP_SYS_PTRACE it cannot read "
            "the memory of a process that changed its uid, and records bind(22, 0x55d5..., 16) "
            "instead of the address (memcached). Added to the unit's own set while learning "
            "only; the learned drop-in keeps the unit's set")
        lines.append("CapabilityBoundingSet=CAP_SYS_PTRACE")
    for kind in dict.fromkeys(e.kind for e in info.exec_lines):
        lines.append(f"{kind}=")
        for i, e in enumerate(info.exec_lines):
            if e.kind != kind:
                continue
            shim: list[str] = []
            if gates is not None:
                shim = ["/bin/sh", "-c", shim_script(gates.control, gates.gates[i], i),
                        "autosandbox-shim"]
            # The unit's own words, as systemd holds them: `$VAR` stays for systemd to expand.
            words = [unitfile.exec_arg(w) for w in (*shim, strace, "-D",
                                                     *strace_options(fast, kernel_opens),
                                                     "-o",
                                                     str(fifos[e]), "--", e.path)]
            words += [unitfile.exec_arg(a, expand_env=True) for a in e.argv[1:]]
            lines.append(f"{kind}={e.prefix()}{' '.join(words)}")
    return unitfile.join_lines(lines)


def unit_cgroup(mgr: Manager, info: ServiceInfo) -> str:
    """The control group the unit's processes will run in, known before it starts."""
    if info.control_group:
        return info.control_group
    slice_name = str(getattr(mgr.unit(info.name), "Slice", "") or "system.slice")
    return slice_cgroup(slice_name, info.name)


def merge_lines(profile: Profile, lines: list[tuple[ExecLine, Recorder]],
                ) -> tuple[set[int], set[int]]:
    """Merge each Exec line's profile into `profile`; a `+` line runs outside the sandbox, so
    what it did is only described (subject["privileged"] and a warning), never merged.
    Returns the pids of the sandboxed lines and, among them, those whose capability checks
    prove nothing about the host (in a user namespace of their own)."""
    pids: set[int] = set()
    userns: set[int] = set()
    privileged = []
    for line, recorder in lines:
        part = recorder.profile
        if "privileged" in line.flags:
            written = sorted(part.written_paths(with_groups=True))
            privileged.append({"exec": line.kind, "path": line.path, "written": written[:20],
                               "written_count": len(written),
                               "capabilities": sorted(part.capabilities),
                               "families": sorted(part.families)})
            what = ", ".join(written[:3]) + (" ..." if len(written) > 3 else "")
            profile.warnings.append(
                f"{line.kind}=+{line.path} runs outside the sandbox: what it did is not part "
                f"of this profile" + (f" (it wrote {what})" if written else ""))
            continue
        pids |= recorder.pids
        userns |= recorder.userns
        part.subject = {}
        profile.merge(part)
    profile.subject.pop("merged", None)
    if privileged:
        profile.subject["privileged"] = privileged
    return pids, userns


def _uid_of(info: ServiceInfo) -> int:
    if info.dynamic_user:
        return 65534
    if not info.user:
        return 0
    try:
        return pwd.getpwnam(info.user).pw_uid
    except KeyError:
        return int(info.user) if info.user.isdigit() else 65534


def _gid_of(info: ServiceInfo) -> int | None:
    """The group systemd runs the unit as (Group=, else User='s primary group, else root's);
    None when unknown: synthesis then proves nothing about ownership with it."""
    if info.dynamic_user:
        return None
    try:
        if info.group:
            return int(info.group) if info.group.isdigit() else grp.getgrnam(info.group).gr_gid
        return pwd.getpwnam(info.user).pw_gid if info.user else 0
    except KeyError:
        return None


def _unit_files(info: ServiceInfo, exclude: Path) -> Iterator[tuple[str, str]]:
    """(path, text) of the unit's own files as systemd reads them: fragment, then drop-ins."""
    for path in [info.fragment_path, *info.dropin_paths]:
        if not path or Path(path) == exclude:
            continue
        try:
            yield path, Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue


def existing_settings(info: ServiceInfo, exclude: Path) -> dict[str, str]:
    """Directives the unit's own files set (fragment, then drop-ins; last one wins)."""
    out: dict[str, str] = {}
    for _, text in _unit_files(info, exclude):
        for key, value in unitfile.parse(text):
            if value:
                out[key] = value
            else:
                out.pop(key, None)
    return out


def unit_text(info: ServiceInfo, exclude: Path) -> str:
    """The unit as systemd reads it (fragment plus drop-ins), for offline checks; the place
    `apply`'s drop-in takes among the drop-ins (by file name) is marked (analyze.merged)."""
    parts = []
    slot = False
    for path, text in _unit_files(info, exclude):
        name = Path(path).name
        if path != info.fragment_path and not slot and name >= APPLIED_DROPIN:
            slot = True
            ours = name == APPLIED_DROPIN  # applied earlier: the new one replaces it
            parts += [analyze.SLOT_BEGIN, *([text] if ours else []), analyze.SLOT_END]
            if ours:
                continue
        parts.append(text)
    if not slot:
        parts += [analyze.SLOT_BEGIN, analyze.SLOT_END]
    return "\n".join(parts)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the unit is always restored (interrupts.py:
    a second signal does not cut the restore)."""
    old = interrupts.install()
    try:
        yield
    finally:
        interrupts.restore(old)


def reset_unit(unit: str | None) -> list[str]:
    """Undo what killed autosandbox runs left: those of `unit` (and its trace or trial drop-in,
    by name), or with None every run on record whose owner is dead. Lines say what was done."""
    require_root()
    if unit is not None:
        check_unit_name(unit)
    runs = [r for r in runstate.runs() if r.pid != os.getpid()
            and (unit is None or r.unit == unit)]
    live = [r for r in runs if r.owner_alive()]
    if unit is not None and live:
        raise UserError(f"autosandbox (pid {live[0].pid}) is still working on {unit}: "
                        "let it finish or stop it, then reset")
    done = [f"left alone: autosandbox (pid {r.pid}) is still running" for r in live]
    dead = [r for r in runs if r not in live]
    for r in dead:
        if r.unit is None:
            done += runstate.undo(r)
    units = sorted({r.unit for r in dead if r.unit} | ({unit} if unit else set()))
    for name in units:
        try:
            done += _reset_one(name, [r for r in dead if r.unit == name])
        except UserError as exc:
            if unit is not None:
                raise
            done.append(f"{name}: {exc}")
    done += [f"removed stale audit rule: {r}" for r in audit.sweep_stale_rules()]
    root = tracefs_root()
    # tracefs names the kernel's pids: in a container (another pid namespace) a live run on
    # the host would look dead, so its instances are never swept from here
    if root is not None and in_initial_pid_namespace():
        for inst in root.glob("instances/autosandbox-*"):
            m = re.search(r"-(\d+)-[^-]+$", inst.name)
            if m is not None and not procs.alive(int(m.group(1)), None) and \
                    runstate.remove_tracefs_instance(inst):
                done.append(f"removed tracefs instance {inst}")
    return done


def _reset_one(unit: str, dead: list[runstate.Run]) -> list[str]:
    """Under the unit's lock: what its dead runs recorded, its trace and trial drop-ins, its
    FIFOs; then the unit is restarted (or stopped, if the run found it stopped)."""
    from autosandbox.systemd.dropins import TRIAL_DROPIN
    mgr = Manager()
    mgr.info(unit)
    with unit_lock(unit):
        done: list[str] = []
        for r in dead:
            done += runstate.undo(r)
        for name in (TRACE_DROPIN, TRIAL_DROPIN):
            if remove_dropin(dropin_path(unit, name)):
                done.append(f"removed {dropin_path(unit, name)}")
        # the killed run's FIFOs (its strace went with it: a FIFO without reader)
        state_dir = STATE_DIR / unit
        if state_dir.is_dir():
            shutil.rmtree(state_dir, ignore_errors=True)
            done.append(f"removed {state_dir}")
        if done:
            mgr.reload()
            was_running = [e.get("was_running") for r in dead for e in r.entries
                           if e["kind"] == "unit"]
            state, _, _, _ = mgr.state(unit)
            if was_running and not any(was_running):
                done.append(f"stopped {unit} (it was stopped before): {mgr.stop(unit)}")
                mgr.reset_failed(unit)
            elif state in ("active", "activating", "reloading", "failed"):
                mgr.reset_failed(unit)
                done.append(f"restarted {unit}: {mgr.restart(unit)}")
    return done


def trace_unit(unit: str, duration: float, exercise: str | None = None,
               on_progress: Callable[[Progress], None] | None = None,
               fast: bool | None = None, keep_partial: bool = False) -> UnitTraceResult:
    """Trace `unit` for `duration` s and restore it. A signal (KeyboardInterrupt) restores
    everything and re-raises; with `keep_partial` the profile so far is returned, partial."""
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
        try:
            return _trace(mgr, info, strace, dropin, duration, exercise, on_progress, fast,
                          keep_partial)
        except BaseException:
            # also when cut after the restore, while the profile is built: its FIFOs go too
            shutil.rmtree(STATE_DIR / unit, ignore_errors=True)
            raise


def _trace(mgr: Manager, info: ServiceInfo, strace: str, dropin: Path, duration: float,
           exercise: str | None, on_progress: Callable[[Progress], None] | None,
           fast: bool | None, keep_partial: bool) -> UnitTraceResult:
    unit = info.name
    was_running = info.running
    uid = _uid_of(info)
    cwd = info.working_directory if info.working_directory.startswith("/") else "/"
    runstate.record("unit", name=unit, was_running=was_running)
    runstate.record("dir", path=str(STATE_DIR / unit))
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
    cut = discard = False
    begun = time.monotonic()
    state_dir = unit_state_dir(unit)
    try:
        # Each line's FIFO: root's, 0600, in a fresh 0711 directory of ours; the gate hands
        # it to the uid of the process the line really started (gate.py).
        for e in info.exec_lines:
            profile = Profile(subject={"unit": unit, "exec": e.kind})
            recorder = Recorder(profile, cwd, uid=uid, first_is_root=False)
            stream = TraceStream(recorder, fifo_dir=state_dir)
            os.chmod(stream.dir, 0o711)
            streams[e] = stream
        # Short: bpftrace 0.17 refuses string literals over 64 bytes, and the BPF program
        # matches the gates by this path (a longer unit name falls back to strace's opens).
        gate_dir = Path(tempfile.mkdtemp(prefix="g-", dir=state_dir))
        os.chmod(gate_dir, 0o711)
        if cap_capable_available():
            tracer = CapabilityTracer(None)
            tracer.__enter__()
        if fast:
            def is_program(pid: int) -> bool:
                return any(pid in s.recorder.pids for s in list(streams.values()))

            systracer = SyscallSetTracer(None, is_program).__enter__()
            # The shims open their gates: that is how bpftrace learns the unit's processes.
            open_tracer, why_not = start_open_tracer(
                gate_prefix=f"{gate_dir}/gate-",
                on_record=kernel_open_sink([s.recorder for s in streams.values()]))
            if why_not is not None:
                notes.append(why_not)
        # by index, as the shims announce (identical lines share one stream)
        line_streams = [streams[e] for e in info.exec_lines]

        def follow(pid: int, index: int, pid_uid: int, pid_gid: int) -> None:
            line_streams[index].recorder.add_root(pid, pid_uid, pid_gid)
            if systracer is not None:
                systracer.add_pid(pid)

        gates = GateServer(gate_dir, len(info.exec_lines), follow, unit_cgroup(mgr, info),
                           [s.fifo for s in line_streams], own_dir=True)
        if audit_why is None:
            try:
                audit_rules = audit.AuditRules(f"autosandbox-learn-{os.getpid()}").__enter__()
            except OSError as exc:
                audit_why = str(exc)
        write_dropin(dropin, trace_dropin(info, {e: s.fifo for e, s in streams.items()},
                                          strace, gates, kernel_opens=open_tracer is not None,
                                          fast=systracer is not None))
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
                    exercise_proc = procs.spawn(
                        ["/bin/sh", "-c", exercise], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
                    runstate.record_process(exercise_proc.pid)
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
                started_ok = False
                break
            time.sleep(min(0.5, max(0.05, duration - elapsed)))
        if exercise and exercise_proc is not None and exercise_proc.poll() == 0:
            exercise_ok = True
        if exercise and not exercise_ok:
            notes.append(f"the --exercise command never succeeded while learning "
                         f"({exercise_runs} runs): the profile misses its code paths")
        if started_ok and info.type != "oneshot":
            _reload_and_stop_traced(mgr, info, notes)
    except KeyboardInterrupt:
        cut = True
        if not keep_partial:
            discard = True
            raise  # nothing is learned from a cut trace
        notes.append("interrupted: the unit was restored; the profile is partial")
    except BaseException:
        discard = True
        raise
    finally:
        # A second signal must not cut the restore short (interrupts.py); one step that
        # fails does not skip the others (_each).
        def stop_exercise() -> None:
            if exercise_proc is not None and exercise_proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(exercise_proc.pid, signal.SIGKILL if cut else signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    exercise_proc.wait(10)

        def close_gates() -> None:
            if gates is not None:
                gates.close()
                with contextlib.suppress(OSError):  # its directory (mkdtemp) goes too
                    gates.control.parent.rmdir()

        def discard_streams() -> None:
            if discard:  # nothing is learned from a cut trace: its FIFOs go at once
                for stream in streams.values():
                    with contextlib.suppress(Exception):
                        stream.close(timeout=2)
                shutil.rmtree(state_dir, ignore_errors=True)

        with interrupts.shielded():
            _each(stop_exercise,
                  lambda: _restore(mgr, info, dropin, was_running, notes),
                  lambda: tracer.__exit__(None, None, None) if tracer is not None else None,
                  close_gates,
                  lambda: open_tracer.close() if open_tracer is not None else None,
                  lambda: systracer.__exit__(None, None, None) if systracer else None,
                  lambda: audit_rules.__exit__(None, None, None) if audit_rules else None,
                  discard_streams)
    profile = Profile(subject={"unit": unit, "uid": uid, "user": info.user or None,
                               "gid": _gid_of(info), "group": info.group or None,
                               "dynamic_user": info.dynamic_user, "type": info.type, "cwd": cwd,
                               "exec": [[e.kind, e.path, *e.argv[1:]] for e in info.exec_lines],
                               "duration_s": round(time.monotonic() - begun, 3)})
    profile.add_source("strace")
    for stream in streams.values():
        stream.close(timeout=10)  # each recorder's profile is whole
    if open_tracer is not None:
        add_kernel_opens(profile, open_tracer, [s.recorder for s in streams.values()])
    pids, outside = merge_lines(profile, [(e, s.recorder) for e, s in streams.items()])
    if systracer is not None:
        add_syscall_set(profile, systracer.syscalls_for(pids))
    if gates is not None:
        profile.warnings.extend(gates.warnings())
    if audit_rules is not None:
        profile.add_source("audit")
        for ev in audit_rules.events():
            if ev.pid in pids:
                profile.add_failed_path(ev.path or f"syscall:{ev.syscall}", ev.errno)
    else:
        notes.append(f"audit was not used: {audit_why}")
    if tracer is not None:
        profile.add_source("tracefs:cap_capable")
        # a process in a user namespace of its own is granted its checks there, not ours
        add_kernel_capabilities(profile, tracer.granted_for(pids - outside))
    else:
        profile.add_source("syscall-inference")
    record_facts(profile)
    with contextlib.suppress(OSError):
        state_dir.rmdir()
    if cut:
        mark_partial(profile)
    return UnitTraceResult(profile, info, notes, started_ok, partial=cut)


def _reload_and_stop_traced(mgr: Manager, info: ServiceInfo, notes: list[str]) -> None:
    """(validation's part) The end of the window: a reload when the unit has ExecReload=, then
    a stop, while the trace drop-in is still in place, so the calls of the life cycle that
    every trial runs (the reload's kill of the main process, state written at exit, ExecStop=)
    reach the profile too. _restore then starts the unit untraced."""
    unit = info.name
    if any(e.kind == "ExecReload" for e in info.exec_lines):
        try:
            cp = subprocess.run(["systemctl", "reload", unit], capture_output=True, text=True,
                                timeout=120, check=False)
            if cp.returncode != 0:
                why = (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]
                notes.append(f"reloading {unit} while it was traced failed: {why[:120]}")
        except subprocess.TimeoutExpired:
            notes.append(f"reloading {unit} while it was traced took over 120s")
        mgr.wait(unit, 30)
    mgr.stop(unit)


def _each(*steps: Callable[[], object]) -> None:
    """Run every clean-up step even if one fails; then raise the first failure."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except BaseException as exc:  # re-raised below, once the others ran
            first = first or exc
    if first is not None:
        raise first


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
