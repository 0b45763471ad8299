"""Trace a systemd service: wrap its Exec lines in strace through a runtime drop-in, restart it,
let the real workload run, then put the unit back exactly as it was, whatever happens.

`strace -D` runs the tracer as a detached grandchild, so the process systemd forked is still the
service's own: Type=forking, notify, PIDFile= and MainPID tracking behave as without tracing.
Each Exec line writes into a FIFO of its own (two tracers never interleave their lines).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from autosandbox import commands, interrupts, unitfile
from autosandbox.errors import UserError
from autosandbox.profile import PrivilegedLine, Profile, Subject
from autosandbox.report import QUIET, Reporter
from autosandbox.systemd import runstate
from autosandbox.systemd.cgroup import cgroup_pids
from autosandbox.systemd.dropins import (
    TRACE_DROPIN,
    dropin_path,
    remove_dropin,
    state_dir_of,
    unit_state_dir,
    write_dropin,
)
from autosandbox.systemd.instances import (
    Instances,
    accepting_socket,
    cgroup_gone,
    is_template,
    prefix_of,
    running_instances,
    slice_of,
    template_info,
)
from autosandbox.systemd.journal import journal_cursor, journal_lines, why_it_failed
from autosandbox.systemd.manager import (
    ExecLine,
    Manager,
    ServiceInfo,
    check_unit_name,
    current_scope,
)
from autosandbox.systemd.session import UnitSession, existing_settings
from autosandbox.trace.command import (
    Progress,
    mark_partial,
    require_strace,
    strace_options,
)
from autosandbox.trace.facts import record_facts
from autosandbox.trace.gate import (
    GateServer,
    instance_shim_script,
    proc_tracer,
    shim_script,
    slice_cgroup,
)
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.sources import KernelSources, Traced
from autosandbox.trace.stream import TraceStream
from autosandbox.trace.tracefs import syscall_tracer_available
from autosandbox.trace.workload import Workload

log = logging.getLogger(__name__)


@dataclass
class UnitTraceResult:
    profile: Profile
    info: ServiceInfo
    notes: list[str] = field(default_factory=list)
    started_ok: bool = True
    partial: bool = False  # cut by a signal and kept (--keep-partial)
    events: int = 0  # trace lines of the sandboxed Exec lines: 0 is a failed trace
    runs: int | None = None  # runs its timer started while traced (scheduled learning)
    failure: str | None = None  # systemd's account of a start that failed under tracing
    instances: int | None = None  # per-connection instances traced (a template)


@dataclass(frozen=True)
class LearnTarget:
    """What `learn NAME` traces: a service, found from a .socket or .timer if need be.
    `scheduled`: started by a timer, traced in the runs the timer starts, never restarted.
    `per_connection`: `service` is the template NAME@.service whose instances an Accept=yes
    socket (`via`) starts, one per connection: every instance started while learning is
    traced, none is restarted; `asked`: the instance the user named, if any."""
    service: str
    via: str | None = None
    scheduled: bool = False
    per_connection: bool = False
    asked: str | None = None


def learn_target(mgr: Manager, name: str) -> LearnTarget:
    """The service `learn NAME` traces. A per-connection (Accept=yes) socket, its template
    and any of its instances all lead to the template: one connection traced while others
    run untraced would be a false success, so every instance started in the window is."""
    via = None
    if name.endswith(".socket") and mgr.accepts(name):
        return LearnTarget(f"{name.removesuffix('.socket')}@.service", name, per_connection=True)
    if name.endswith(".service") and "@" in name:
        sock = accepting_socket(mgr, name)
        if sock is not None:
            return LearnTarget(f"{prefix_of(name)}@.service", sock, per_connection=True,
                          asked=None if is_template(name) else name)
    if name.endswith((".socket", ".timer")):
        services = [t for t in mgr.triggers(name) if t.endswith(".service")]
        if len(services) != 1:
            raise UserError(f"{name} starts {', '.join(services) or 'no service'}: learn needs "
                            "exactly one service to trace")
        via, name = name, services[0]
    check_unit_name(name)
    info = mgr.info(name)
    timers = [t for t in info.triggered_by if t.endswith(".timer")]
    if via is None and timers and info.active_state != "active":
        via = timers[0]
    return LearnTarget(name, via, scheduled=bool(via and via.endswith(".timer")))


def trace_dropin(info: ServiceInfo, fifos: dict[ExecLine, Path], strace: str,
                 gates: GateServer | None = None, kernel_opens: bool = False,
                 fast: bool | None = None) -> str:
    """With `gates`, each line starts as a shim that announces its pid and waits until it is
    followed (gate.py). With `fast` (default: with gates), strace stops only on the calls the
    recorder reads; with `kernel_opens` not on opens either (bpftrace reports them)."""
    fast = gates is not None if fast is None else fast
    # an instance still serving when learning ends runs on without strace (detach_strace)
    detachable = gates is not None and gates.per_instance
    lines = unitfile.comment(
        f"autosandbox: tracing {info.name}. Removed when learning ends; if it is left over, "
        f"run: autosandbox reset {info.name}")
    lines += ["[Service]"]
    lines += unitfile.comment("strace needs ptrace(), which the unit's own filter may forbid; "
                              "the unit's filter is kept in the learned drop-in")
    lines.append("SystemCallFilter=")
    own = existing_settings(info, dropin_path(info.name, TRACE_DROPIN))
    if own.get("NoExecPaths"):
        # Seen: redis-server.service (NoExecPaths=/, ExecPaths=/usr/bin/redis-server ...)
        # failed at every start with "Failed to locate executable /bin/sh: Permission denied".
        lines += unitfile.comment(
            "the unit mounts paths noexec (NoExecPaths=): the shim's shell and strace may run "
            "while learning; the learned drop-in keeps the unit's own lists")
        needed = sorted({os.path.realpath(p) for p in ("/bin/sh", strace)})
        lines.append("ExecPaths=" + " ".join(v for v in map(unitfile.path_value, needed) if v))
    if own.get("CapabilityBoundingSet") and not current_scope().is_user:
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
            plus = e.privileged
            output = ["-o", str(fifos[e])] if e in fifos else []
            if gates is not None and gates.per_instance:
                # the instance's own FIFO comes through its gate (gate.py)
                shim = ["/bin/sh", "-c", instance_shim_script(gates.control, i,
                                                               privileged=plus),
                        "autosandbox-shim"]
            elif gates is not None:
                shim = ["/bin/sh", "-c", shim_script(gates.control, gates.gates[i], i, plus),
                        "autosandbox-shim"]
            # The unit's own words, as systemd holds them: `$VAR` stays for systemd to expand.
            words = [unitfile.exec_arg(w) for w in (*shim, strace, "-D",
                                                     *strace_options(fast, kernel_opens,
                                                                     detachable),
                                                     *output, "--", e.path)]
            words += [unitfile.exec_arg(a, expand_env=True) for a in e.argv[1:]]
            lines.append(f"{kind}={e.prefix()}{' '.join(words)}")
    return unitfile.join_lines(lines)


def unit_cgroup(mgr: Manager, info: ServiceInfo) -> str:
    """The control group the unit's processes will run in, known before it starts."""
    if info.control_group:
        return info.control_group
    slice_name = str(getattr(mgr.unit(info.name), "Slice", "") or "system.slice")
    return mgr.cgroup_root() + slice_cgroup(slice_name, info.name)


def merge_lines(profile: Profile, lines: list[tuple[ExecLine, Recorder]],
                ) -> tuple[set[int], set[int]]:
    """Merge each Exec line's profile into `profile`; a `+` line runs outside the sandbox, so
    what it did is only described (Subject.privileged and a warning), never merged.
    Returns the pids of the sandboxed lines and, among them, those whose capability checks
    prove nothing about the host (in a user namespace of their own)."""
    pids: set[int] = set()
    userns: set[int] = set()
    privileged: list[PrivilegedLine] = []
    for line, recorder in lines:
        part = recorder.profile
        if line.privileged:
            written = sorted(part.written_paths(with_groups=True))
            privileged.append(PrivilegedLine(line.kind, line.path, written[:20], len(written),
                                             sorted(part.capabilities), sorted(part.families)))
            what = ", ".join(written[:3]) + (" ..." if len(written) > 3 else "")
            profile.warnings.append(
                f"{line.kind}=+{line.path} runs outside the sandbox: what it did is not part "
                f"of this profile" + (f" (it wrote {what})" if written else ""))
            continue
        pids |= recorder.pids
        userns |= recorder.userns
        part.subject = Subject()
        profile.merge(part)
    profile.subject = replace(profile.subject, merged=[], privileged=privileged)
    return pids, userns


def _uid_of(info: ServiceInfo) -> int:
    scope = current_scope()
    if scope.uid is not None:  # a user's manager runs its units as that user
        return scope.uid
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
    if current_scope().uid is not None:
        return current_scope().gid
    if info.dynamic_user:
        return None
    try:
        if info.group:
            return int(info.group) if info.group.isdigit() else grp.getgrnam(info.group).gr_gid
        return pwd.getpwnam(info.user).pw_gid if info.user else 0
    except KeyError:
        return None


def detach_strace(cgroups: list[str], strace: str) -> int:
    """SIGKILL to our strace (that binary, in the same control group) tracing a process of
    each control group; the kernel detaches its tracees, which run on (strace writing to a
    file ignores SIGTERM and SIGPIPE, and sets no PTRACE_O_EXITKILL). How many."""
    ours = os.path.realpath(strace)
    done = 0
    for cgroup in cgroups:
        pids = cgroup_pids(cgroup)
        for tracer in {proc_tracer(p) for p in pids} & pids:
            with contextlib.suppress(OSError):
                if os.path.realpath(f"/proc/{tracer}/exe") == ours:
                    os.kill(tracer, signal.SIGKILL)
                    log.debug("detached strace %d from %s", tracer, cgroup)
                    done += 1
    return done


def trace_unit(unit: str, duration: float, exercise: str | None = None,
               reporter: Reporter = QUIET,
               fast: bool | None = None, keep_partial: bool = False,
               scheduled: bool = False, per_connection: bool = False) -> UnitTraceResult:
    """Trace `unit` for `duration` s and restore it. A signal (KeyboardInterrupt) restores
    everything and re-raises; with `keep_partial` the profile so far is returned, partial.
    `scheduled`: the unit is not restarted; the runs its timer starts are traced.
    `per_connection`: `unit` is a template (NAME@.service) an Accept=yes socket starts: each
    instance started in the window is traced on its own, none is stopped or restarted."""
    dropin = dropin_path(unit, TRACE_DROPIN)
    # a trace that fails or is cut leaves no FIFOs (also when cut after the unit's restore,
    # while the profile is built); the unit itself is restored by _UnitTrace.run
    session = UnitSession(unit, own_dropin=dropin, restore_on="error",
                          restore=lambda: shutil.rmtree(state_dir_of(unit), ignore_errors=True))
    strace = require_strace()
    mgr = Manager()
    info = template_info(mgr, unit) if per_connection else mgr.info(unit)
    if not any(e.kind == "ExecStart" for e in info.exec_lines):
        raise UserError(f"{unit} has no ExecStart= to trace")
    if info.root_directory or info.root_image:
        # strace, its FIFOs and our gate shell live in the host's root, not in the unit's
        which = (f"RootDirectory={info.root_directory}" if info.root_directory
                 else f"RootImage={info.root_image}")
        raise UserError(f"{unit} runs in a root of its own ({which}): tracing it is not "
                        "supported (strace and its FIFOs are not there); nothing was changed")
    with session:
        plan = _Plan(duration, exercise, reporter, fast, keep_partial, scheduled, per_connection)
        return _UnitTrace(mgr, info, strace, dropin, plan).run()


# how long a started unit may take to reach its first traced call before the window opens
STARTUP_LIMIT = 120.0


@dataclass(frozen=True)
class _Plan:
    """What one trace of a unit is asked for (trace_unit's arguments)."""
    duration: float
    exercise: str | None
    reporter: Reporter
    fast: bool | None
    keep_partial: bool
    scheduled: bool
    per_connection: bool = False


class _UnitTrace:
    """One trace of a unit: its tracers, the window, the restore (whatever happens), then
    the profile. Each step is a method; the state they share lives here."""

    def __init__(self, mgr: Manager, info: ServiceInfo, strace: str, dropin: Path,
                 plan: _Plan) -> None:
        self.mgr, self.info, self.strace, self.dropin, self.plan = mgr, info, strace, dropin, plan
        self.unit = info.name
        self.was_running = info.running
        self.uid = _uid_of(info)
        self.cwd = info.working_directory if info.working_directory.startswith("/") else "/"
        self.runs = 0  # ExecStart= lines the gate let in: runs of a scheduled unit
        self.first_start = next(i for i, e in enumerate(info.exec_lines)
                                if e.kind == "ExecStart")
        self.streams: dict[ExecLine, TraceStream] = {}
        self.line_streams: list[TraceStream] = []  # by index, as the shims announce
        # per connection: one stream per announcement (gate thread appends), and the rule
        # for which control groups are instances started in our window
        self.per_conn = plan.per_connection
        self.instance_streams: list[tuple[ExecLine, TraceStream]] = []
        self.recorders: list[Recorder] = []  # every stream's, for the kernel's opens
        self.instances: Instances | None = None
        self.notes: list[str] = []
        self.gates: GateServer | None = None
        # the kernel's tracers (and audit), stopped on `stack` whatever happens
        self.kernel = KernelSources(self.recorders, self._is_program, audit_wanted=True)
        self.stack = contextlib.ExitStack()
        self.workload = Workload(plan.exercise)
        self.started_ok = True
        self.failure: str | None = None
        self.cursor: str | None = None
        self.cut = False
        self.begun = time.monotonic()
        self.state_dir = state_dir_of(self.unit)

    def all_streams(self) -> list[tuple[ExecLine, TraceStream]]:
        return [*self.streams.items(), *list(self.instance_streams)]

    def run(self) -> UnitTraceResult:
        if not self.per_conn:  # a template is never restarted, by us or by `reset`
            runstate.record("unit", name=self.unit, was_running=self.was_running)
        runstate.record("dir", path=str(state_dir_of(self.unit)))
        fast = self._fast()
        self.state_dir = unit_state_dir(self.unit)
        discard = False
        try:
            self._start_tracers(fast)
            self._start_unit()
            self._window()
            self._end_of_window()
        except KeyboardInterrupt:
            self.cut = True
            if not self.plan.keep_partial:
                discard = True
                raise  # nothing is learned from a cut trace
            self.notes.append("interrupted: the unit was restored; the profile is partial")
        except BaseException:
            discard = True
            raise
        finally:
            # A second signal must not cut the restore short (interrupts.py); one step that
            # fails does not skip the others (_each).
            with interrupts.shielded():
                self._stop_all(discard)
        return self._profile()

    def _fast(self) -> bool:
        if self.plan.fast is None:
            return syscall_tracer_available()
        if self.plan.fast and not syscall_tracer_available():
            raise UserError("the fast tracer needs a usable tracefs (not in a container); "
                            "use --tracer full")
        return self.plan.fast

    def _start_tracers(self, fast: bool) -> None:
        # Each line's FIFO: root's, 0600, in a fresh 0711 directory of ours; the gate hands
        # it to the uid of the process the line really started (gate.py). Per connection,
        # each announcement gets its own (_follow).
        for e in [] if self.per_conn else self.info.exec_lines:
            profile = Profile(subject=Subject(unit=self.unit))
            recorder = Recorder(profile, self.cwd, uid=self.uid, first_is_root=False)
            stream = TraceStream(recorder, fifo_dir=self.state_dir)
            os.chmod(stream.dir, 0o711)
            self.streams[e] = stream
            self.recorders.append(recorder)
        # Short: bpftrace 0.17 refuses string literals over 64 bytes, and the BPF program
        # matches the gates by this path (a longer unit name falls back to strace's opens).
        gate_dir = Path(tempfile.mkdtemp(prefix="g-", dir=self.state_dir))
        os.chmod(gate_dir, 0o711)
        # The shims open their gates: that is how bpftrace learns the unit's processes.
        why_not = self.kernel.start(self.stack, fast, gate_prefix=f"{gate_dir}/gate-")
        if why_not is not None:
            self.notes.append(why_not)
        # Nothing to follow yet: each line's pid is added as its shim announces it (_follow)
        self.kernel.start_tracefs(None)
        # identical lines share one stream
        self.line_streams = [self.streams[e] for e in self.info.exec_lines if e in self.streams]
        if self.per_conn:
            # taken before our drop-in exists: those instances are not ours
            slice_cg = slice_of(self.mgr, self.unit)
            prefix = prefix_of(self.unit)
            self.instances = Instances(slice_cg, prefix, running_instances(slice_cg, prefix))
            where: str | Instances = self.instances
        else:
            where = unit_cgroup(self.mgr, self.info)
        self.gates = GateServer(gate_dir, len(self.info.exec_lines), self._follow,
                                where, [s.fifo for s in self.line_streams], own_dir=True)

    def _is_program(self, pid: int) -> bool:
        """A pid of a sandboxed line: what a `+` line calls first must not silence the call
        for the others."""
        return any(pid in s.recorder.pids for e, s in self.all_streams()
                   if not e.privileged)

    def _follow(self, pid: int, index: int, pid_uid: int, pid_gid: int) -> Path | None:
        self.runs += index == self.first_start
        fifo = None
        if self.per_conn:
            line = self.info.exec_lines[index]
            recorder = Recorder(Profile(subject=Subject(unit=self.unit)),
                                self.cwd, uid=self.uid, first_is_root=False)
            stream = TraceStream(recorder, fifo_dir=self.state_dir)
            os.chmod(stream.dir, 0o711)
            self.recorders.append(recorder)
            self.instance_streams.append((line, stream))
            fifo = stream.fifo
        else:
            recorder = self.line_streams[index].recorder
        recorder.add_root(pid, pid_uid, pid_gid)
        self.kernel.add_pid(pid)
        return fifo

    def _start_unit(self) -> None:
        write_dropin(self.dropin, trace_dropin(
            self.info, {e: s.fifo for e, s in self.streams.items()}, self.strace, self.gates,
            kernel_opens=self.kernel.opens is not None, fast=self.kernel.syscalls is not None))
        self.mgr.reload()
        self.cursor = journal_cursor()
        # scheduled: its timer starts it (no run off schedule); per connection: its socket
        # starts the instances; the window opens now
        state = "active" if self.plan.scheduled or self.per_conn else \
            self.mgr.restart(self.unit)
        if state != "active" and self.info.type != "oneshot":
            self._failed(f"{self.unit} did not start under strace (state {state})")
        elif not self.plan.scheduled and not self.per_conn:
            self._wait_until_traced()
        self.begun = time.monotonic()  # --duration counts traced time, not the start-up

    def _wait_until_traced(self) -> None:
        """A simple service is active once forked, before its shim was let in and strace ran
        the program (seconds on a busy machine): --duration starts once strace reported the
        ExecStart= line's first call. Not by then after STARTUP_LIMIT s, or stopped: the
        window opens anyway (what it finds is reported as usual)."""
        stream = self.line_streams[self.first_start]
        began = time.monotonic()
        while stream.events == 0 and time.monotonic() - began < STARTUP_LIMIT:
            interrupts.check()  # a signal something caught on its way ends the wait
            st, sub, _, _ = self.mgr.state(self.unit)
            if st in ("failed", "inactive"):
                return
            self.plan.reporter.progress(Progress(0.0, self.plan.duration, 0, 0, [], [],
                                                 f"{st}/{sub}, starting under strace"))
            time.sleep(0.2)

    def _failed(self, what: str) -> None:
        self.started_ok = False
        self.failure = why_it_failed(journal_lines(self.unit, self.cursor))
        self.notes.append(f"{what}: {self.failure or 'see journalctl -u ' + self.unit}")

    def _window(self) -> None:
        duration = self.plan.duration
        while self.started_ok:
            interrupts.check()  # a signal something caught on its way ends the window
            self.workload.tick()
            elapsed = time.monotonic() - self.begun
            if self.per_conn and self.gates is not None:
                self._report(elapsed, f"{len(self.gates.instances)} instance(s)")
                if elapsed >= duration:
                    break
                time.sleep(min(0.5, max(0.05, duration - elapsed)))
                continue
            st, sub, _, _ = self.mgr.state(self.unit)
            self._report(elapsed, f"{st}/{sub}")
            if elapsed >= duration:
                break
            if st in ("failed", "inactive") and self.info.type != "oneshot" and \
                    not self.plan.scheduled:
                self._failed(f"{self.unit} stopped while it was traced ({st}/{sub})")
                break
            time.sleep(min(0.5, max(0.05, duration - elapsed)))

    def _report(self, elapsed: float, state: str) -> None:
        streams = [s for _, s in self.all_streams()]
        paths = sum(len(s.recorder.profile.paths) for s in streams)
        fams = sorted({f for s in streams for f in s.recorder.profile.families})
        caps = sorted({c for s in streams for c in s.recorder.profile.capabilities})
        self.plan.reporter.progress(Progress(elapsed, self.plan.duration,
                                             sum(s.events for s in streams), paths, fams,
                                             caps, state))

    def _end_of_window(self) -> None:
        missed = self.workload.missed()
        if missed is not None:
            self.notes.append(missed)
        if self.per_conn:
            self._wait_for_instances(max(60.0, self.plan.duration))
        elif self.plan.scheduled:
            _wait_for_run(self.mgr, self.unit, max(60.0, self.plan.duration))
            self.started_ok = self.runs > 0
        elif self.started_ok and self.info.type != "oneshot":
            _reload_and_stop_traced(self.mgr, self.info, self.notes)

    def _wait_for_instances(self, limit: float) -> None:
        """The instances traced end under the trace (their connections close); one still
        serving after `limit` s is left running, traced no more (never stopped)."""
        deadline = time.monotonic() + limit
        traced = list(self.gates.instances) if self.gates is not None else []
        while time.monotonic() < deadline and not all(cgroup_gone(c) for c in traced):
            time.sleep(0.2)
        left = [c for c in traced if not cgroup_gone(c)]
        if left:
            self.notes.append(f"{len(left)} traced instance(s) still served a connection "
                              f"{limit:.0f}s after the window: left running (never "
                              "stopped)")

    def _stop_all(self, discard: bool) -> None:
        _each(lambda: self.workload.stop(self.cut),
              lambda: _restore(self.mgr, self.info, self.dropin, self.was_running, self.notes,
                               self.plan.scheduled, self.per_conn),
              self._detach_instances,
              self._close_gates,
              self.stack.close,
              lambda: self._discard_streams() if discard else None)

    def _detach_instances(self) -> None:
        """Per connection: an instance still serving is never stopped, but our strace lets
        go of it (detach_strace: the instance runs on untraced)."""
        if self.per_conn and self.gates is not None:
            detach_strace(list(self.gates.instances), self.strace)

    def _close_gates(self) -> None:
        if self.gates is not None:
            self.gates.close()
            with contextlib.suppress(OSError):  # its directory (mkdtemp) goes too
                self.gates.control.parent.rmdir()

    def _discard_streams(self) -> None:
        """Nothing is learned from a cut trace: its FIFOs go at once."""
        for _, stream in self.all_streams():
            with contextlib.suppress(Exception):
                stream.close(timeout=2)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _profile(self) -> UnitTraceResult:
        info = self.info
        scope = current_scope()
        mine = scope.is_user  # a unit of a user's manager: synthesis knows it by `manager`
        profile = Profile(subject=Subject(
            unit=self.unit, uid=self.uid, user=info.user or None, gid=_gid_of(info),
            group=info.group or None, dynamic_user=info.dynamic_user, unit_type=info.type,
            cwd=self.cwd, exec_lines=[[e.kind, e.path, *e.argv[1:]] for e in info.exec_lines],
            duration_s=round(time.monotonic() - self.begun, 3),
            manager="user" if mine else None, manager_uid=scope.uid,
            manager_user=scope.user if mine else None, manager_home=scope.home if mine else None))
        profile.add_source("strace")
        streams = self.all_streams()
        if self.per_conn:
            # an instance still serving a connection still feeds its recorder: left out
            live = [(e, s) for e, s in streams if not s.drained(2)]
            for _, stream in live:
                shutil.rmtree(stream.dir, ignore_errors=True)
            streams = [x for x in streams if x not in live]
            if live:
                self.notes.append(f"the trace of {len(live)} instance(s) still serving a "
                                  "connection was left out of the profile")
        for _, stream in streams:
            stream.close(timeout=10)  # each recorder's profile is whole
        kept = {id(s) for _, s in streams}
        traced = [Traced(s.recorder, not e.privileged, id(s) in kept)
                  for e, s in self.all_streams()]
        # per connection: each instance's profile merged into the template's, once the
        # kernel's held opens reached it
        self.notes.extend(self.kernel.finish(
            profile, traced, partial=self.cut,
            merge=lambda: merge_lines(profile, [(e, s.recorder) for e, s in streams])))
        events = sum(s.events for e, s in streams if not e.privileged)
        if self.gates is not None:
            profile.warnings.extend(self.gates.warnings())
        record_facts(profile)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()
        if self.cut:
            mark_partial(profile)
        if self.plan.scheduled:
            profile.subject = replace(profile.subject, runs=self.runs)
        instances = None
        if self.per_conn and self.gates is not None and self.instances is not None:
            instances = len(self.gates.instances)
            profile.subject = replace(profile.subject, instances=instances)
            if self.instances.before:
                self.notes.append(f"{len(self.instances.before)} instance(s) already running "
                                  "when learning began were left alone (not traced, not "
                                  "counted)")
        return UnitTraceResult(profile, info, self.notes, self.started_ok, partial=self.cut,
                               events=events, runs=self.runs if self.plan.scheduled else None,
                               failure=self.failure, instances=instances)


def _reload_and_stop_traced(mgr: Manager, info: ServiceInfo, notes: list[str]) -> None:
    """(validation's part) The end of the window: a reload when the unit has ExecReload=, then
    a stop, while the trace drop-in is still in place, so the calls of the life cycle that
    every trial runs (the reload's kill of the main process, state written at exit, ExecStop=)
    reach the profile too. _restore then starts the unit untraced."""
    unit = info.name
    if any(e.kind == "ExecReload" for e in info.exec_lines):
        try:
            cp = commands.run([*current_scope().systemctl(), "reload", unit],
                              timeout=120, check=False)
            if cp.returncode != 0:
                why = (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]
                notes.append(f"reloading {unit} while it was traced failed: {why[:120]}")
        except commands.ToolTimeout:
            notes.append(f"reloading {unit} while it was traced took over 120s")
        mgr.wait(unit, 30)
    mgr.stop(unit)


def _in_run(mgr: Manager, unit: str) -> bool:
    """A process of a run is there (a oneshot is `activating` while it runs)."""
    state, _, main_pid, _ = mgr.state(unit)
    return state in ("activating", "deactivating", "reloading") or (
        state == "active" and main_pid != 0)


def _wait_for_run(mgr: Manager, unit: str, limit: float) -> None:
    """A run its timer started in the window ends under the trace (bounded: _restore stops
    one that is still running after `limit` s)."""
    deadline = time.monotonic() + limit
    while _in_run(mgr, unit) and time.monotonic() < deadline:
        time.sleep(0.2)


def _each(*steps: Callable[[], object]) -> None:
    """Run every clean-up step even if one fails; then raise the first failure."""
    first: BaseException | None = None
    for n, step in enumerate(steps, 1):
        began = time.monotonic()
        try:
            step()
        except BaseException as exc:  # re-raised below, once the others ran
            log.debug("clean-up step %d/%d failed: %r", n, len(steps), exc)
            first = first or exc
        log.debug("clean-up step %d/%d done in %.2f s", n, len(steps), time.monotonic() - began)
    if first is not None:
        raise first


def _restore(mgr: Manager, info: ServiceInfo, dropin: Path, was_running: bool,
             notes: list[str], scheduled: bool = False, per_connection: bool = False) -> None:
    """Remove the trace drop-in and bring the unit back to the state it was found in; a
    scheduled unit is left as its timer's runs left it (their result is theirs); a template's
    instances run on (each ends with its connection)."""
    unit = info.name
    loaded = remove_dropin(dropin)  # written: systemd may have loaded it
    log.debug("restore %s: trace drop-in %s", unit, "removed" if loaded else "not there")
    if loaded:
        mgr.reload()
    if per_connection:
        return
    if not loaded and unit not in mgr.changed:
        log.debug("restore %s: untouched, nothing to do", unit)
        return  # interrupted before anything reached the unit: it runs as it was found
    if scheduled and not _in_run(mgr, unit):
        log.debug("restore %s: scheduled and not running, left as its timer left it", unit)
        return
    log.debug("restore %s: %s it, as found", unit, "restarting" if was_running else "stopping")
    if was_running:
        mgr.reset_failed(unit)
        state = mgr.restart(unit)
        if state != "active":
            notes.append(f"after restoring, {unit} is {state} (it was active before learning)")
    else:
        mgr.stop(unit)
        mgr.reset_failed(unit)
