"""The optional kernel tracers of one learn, beside strace: which run, their start and stop,
and how what they saw is folded into the profile. One home for `learn -- CMD` (command.py)
and `learn UNIT` (unit.py), which only orchestrate.

- bpftrace (opens.py), in fast mode: the opens (and kernel.covered() calls) strace then
  skips, and the capability checks where the kernel lets it count them (kernel_sets.py);
- tracefs cap_capable, only where bpftrace does not run: a tracefs instance following every
  process would print every check on the machine, the BPF program counts them in place;
- tracefs syscall events, in fast mode: the syscall set strace was not asked to stop on;
- audit rules (a unit only): the accesses the kernel refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autosandbox.errors import UserError
from autosandbox.linux import audit
from autosandbox.linux.syscalls import NOT_CALLS
from autosandbox.profile import Profile
from autosandbox.trace import kernel_sets, opens
from autosandbox.trace.capabilities import NOISY_KERNEL_CAPS
from autosandbox.trace.kernel import CallRecord, CallSink
from autosandbox.trace.kernel_sets import SANDBOXED
from autosandbox.trace.opens import OpenTracer, Record
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.tracefs import (
    CapabilityTracer,
    SyscallSetTracer,
    cap_capable_available,
)


@dataclass(frozen=True)
class Traced:
    """One recorder of the learn. `sandboxed`: its line runs in the sandbox (not a `+` line):
    its calls and capability checks are the profile's. `kept`: its profile is part of the
    learned one (per connection, an instance still serving is left out)."""
    recorder: Recorder
    sandboxed: bool = True
    kept: bool = True


class KernelSources:
    """The kernel's views of one learn. `recorders`: every recorder, as they come (a unit's
    per-connection instances are appended while it runs): bpftrace hands each open to the one
    following its thread. `is_program(pid)`: a pid of a sandboxed line (its first call
    silences that syscall's tracefs event). `caps`: a cap_capable instance may run (command
    mode: root only). `audit`: audit rules are wanted (a unit)."""

    def __init__(self, recorders: list[Recorder], is_program: Callable[[int], bool], *,
                 caps: bool = True, audit_wanted: bool = False) -> None:
        self.recorders = recorders
        self.is_program = is_program
        self.caps_wanted = caps
        self.audit_why = audit.unavailable_reason() if audit_wanted else None
        self.audit_wanted = audit_wanted
        self.fast = False
        self.opens: OpenTracer | None = None
        self.caps: CapabilityTracer | None = None
        self.syscalls: SyscallSetTracer | None = None
        self.audit_rules: audit.AuditRules | None = None

    def start(self, stack: contextlib.ExitStack, fast: bool, root_pids: Sequence[int] = (),
              gate_prefix: str | None = None) -> str | None:
        """Every tracer's stop goes on `stack` first (caps, opens, syscalls, audit: whatever
        started is stopped, whatever happens); then bpftrace starts, before the program does:
        it follows `root_pids` (their children from before the fork) or the processes that
        open a gate under `gate_prefix`. Why bpftrace does not run (strace then stops on
        opens), or None. The rest starts with `start_tracefs`, once there is a pid to follow."""
        self.fast = fast
        # ExitStack unwinds last in, first out
        stack.callback(lambda: self.audit_rules.__exit__(None, None, None)
                       if self.audit_rules is not None else None)
        stack.callback(lambda: self.syscalls.__exit__(None, None, None)
                       if self.syscalls is not None else None)
        stack.callback(lambda: self.opens.close() if self.opens is not None else None)
        stack.callback(lambda: self.caps.__exit__(None, None, None)
                       if self.caps is not None else None)
        if not fast:
            return None
        self.opens, why_not = start_open_tracer(root_pids, gate_prefix,
                                                on_record=kernel_open_sink(self.recorders))
        return why_not

    def start_tracefs(self, root_pid: int | None) -> None:
        """The tracefs instances, following `root_pid` (strace: left out of both) or, None,
        the pids given to `add_pid`; then the audit rules."""
        # The BPF program, where it runs, also counts the capability checks (kernel_sets.py)
        if self.caps_wanted and cap_capable_available() and self.opens is None:
            ignore = frozenset() if root_pid is None else frozenset({root_pid})
            self.caps = CapabilityTracer(root_pid, ignore_pids=ignore).__enter__()
        if self.fast:
            self.syscalls = SyscallSetTracer(root_pid, self.is_program).__enter__()
        if self.audit_wanted and self.audit_why is None:
            try:
                self.audit_rules = audit.AuditRules(
                    f"autosandbox-learn-{os.getpid()}").__enter__()
            except OSError as exc:
                self.audit_why = str(exc)

    def add_pid(self, pid: int) -> None:
        """A process the syscall set follows from now on (a unit's line, before strace)."""
        if self.syscalls is not None:
            self.syscalls.add_pid(pid)

    def finish(self, profile: Profile, traced: Sequence[Traced], *, partial: bool = False,
               merge: Callable[[], object] | None = None) -> list[str]:
        """Once the tracers stopped and the streams ended: the held opens go to the kept
        recorders, `merge` (if any) then puts their profiles into `profile`, which gets the
        syscall set, audit's refusals and the capabilities granted, with their sources and
        warnings. Returns notes for the user (audit not used)."""
        notes: list[str] = []
        if self.opens is not None:
            add_kernel_opens(profile, self.opens, [t.recorder for t in traced if t.kept],
                             partial=partial)
        if merge is not None:
            merge()
        if self.syscalls is not None:
            # A call is reported until a sandboxed line makes it: a line left out may have
            # been the first, so every sandboxed line's pids count.
            add_syscall_set(profile, self.syscalls.syscalls_for(set().union(
                *(t.recorder.pids for t in traced if t.sandboxed))))
        ours = [t.recorder for t in traced if t.sandboxed and t.kept]
        pids: set[int] = set().union(*(r.pids for r in ours))
        if self.audit_rules is not None:
            profile.add_source("audit")
            for ev in self.audit_rules.events():
                if ev.pid in pids:
                    profile.add_failed_path(ev.path or f"syscall:{ev.syscall}", ev.errno)
        elif self.audit_wanted:
            notes.append(f"audit was not used: {self.audit_why}")
        if self.caps is not None:
            # a process in a user namespace of its own is granted its checks there, not ours
            outside: set[int] = set().union(*(r.userns for r in ours))
            add_kernel_capabilities(profile, self.caps.granted_for(pids - outside),
                                    "tracefs:cap_capable")
        elif self.opens is not None and kernel_sets.caps_available():
            add_kernel_capabilities(profile, self.opens.granted.get(SANDBOXED, {}),
                                    "bpftrace:cap_capable")
        else:
            profile.add_source("syscall-inference")
        return notes


def start_open_tracer(root_pids: Sequence[int] = (), gate_prefix: str | None = None,
                      on_record: Callable[[Record], bool] | None = None,
                      ) -> tuple[OpenTracer | None, str | None]:
    """bpftrace reporting opens (to `on_record` as they come), or None and why not (strace
    then stops on opens)."""
    if not opens.available():
        why = ("bpftrace is not installed" if opens.bpftrace_path() is None
               else "the kernel's syscall tracepoints are not usable here")
        return None, f"opens were traced by strace ({why}): slower under load"
    try:
        return OpenTracer(root_pids, gate_prefix, on_record=on_record), None
    except (OSError, ValueError) as exc:
        return None, f"opens were traced by strace: {exc}"


def kernel_open_sink(recorders: Sequence[Recorder]) -> Callable[[Record], bool]:
    """Gives each open or call the kernel reports to the recorder following the thread that
    made it (one per Exec line); False if none follows it (yet)."""
    calls = CallSink(recorders)

    def take(rec: Record) -> bool:
        if isinstance(rec, CallRecord):
            return calls.take(rec)
        flags, errno_name = rec.flags_text(), rec.errno_name
        return any(r.opened(rec.tid, rec.path, rec.dir_path, flags, errno_name, rec.root,
                            rec.start_dir) for r in recorders)
    return take


def add_kernel_opens(profile: Profile, tracer: OpenTracer, recorders: Sequence[Recorder],
                     partial: bool = False) -> None:
    """After the streams ended: the held opens of a closed `tracer` go to their recorders,
    (all of them, for a tracer without a sink); `profile` gets the source and the warnings.
    Opens no recorder takes make the profile a false account of the files (the sandbox
    synthesized from it too tight, or its UMask= wrong): refused, unless already `partial`."""
    profile.add_source("bpftrace:open")
    if tracer.on_record is None:
        take = kernel_open_sink(recorders)
        for rec in tracer.records:
            if not take(rec):
                tracer.unattributed += 1
    tracer.deliver()
    profile.warnings.extend(tracer.warnings)
    if tracer.unattributed and not partial:
        raise UserError(f"bpftrace reported {tracer.unattributed} opens or calls by the traced "
                        "processes that could not be placed in their trace: the profile would "
                        "miss what they did, so nothing was learned (a bug, please "
                        "report it; '--tracer full' traces them with strace instead)")


def add_kernel_capabilities(profile: Profile, granted: dict[str, int], source: str) -> None:
    """Granted checks become needs; the known-noisy ones only when a syscall corroborates."""
    profile.add_source(source)
    for cap, count in sorted(granted.items()):
        if cap in NOISY_KERNEL_CAPS and cap not in profile.capabilities:
            profile.warnings.append(
                f"ignored {count} kernel checks of {cap}: made for memory accounting, "
                "no syscall needing it was seen")
            continue
        profile.add_cap(cap, f"kernel granted {count} checks", count)


def add_syscall_set(profile: Profile, names: set[str]) -> None:
    """Calls tracefs saw but strace was not asked to stop on: in the set, counted once."""
    profile.add_source("tracefs:syscalls")
    for name in names - NOT_CALLS:
        profile.syscalls.setdefault(name, 1)
