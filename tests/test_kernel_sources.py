"""KernelSources (trace/sources.py): which kernel tracers of a learn run, that every one started
is stopped whatever happens, and which pids each one's evidence is taken for. Fakes stand in
for the tracers (the real ones are covered by test_kernel_*.py and test_fast_mode.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from autosandbox.linux import audit
from autosandbox.linux.audit import AuditEvent
from autosandbox.profile import Profile
from autosandbox.trace import kernel_sets, sources
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.sources import KernelSources, Traced


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []


def _fakes(monkeypatch: pytest.MonkeyPatch, log: _Log, fail: str = "") -> None:
    """Fake bpftrace, cap_capable and syscall instances and audit rules, logging their life;
    the one named `fail` refuses to start."""

    class Opens:
        def __init__(self) -> None:
            self.on_record = object()
            self.warnings = ["opens warning"]
            self.unattributed = 0
            self.granted: dict[str, dict[str, int]] = {}

        def close(self) -> None:
            log.lines.append("stop opens")

        def deliver(self) -> None:
            log.lines.append("deliver opens")

    def start_open_tracer(*_: Any, **__: Any) -> tuple[Any, str | None]:
        if fail == "opens":
            return None, "no bpftrace here"
        log.lines.append("start opens")
        return Opens(), None

    class Instance:
        name = ""

        def __init__(self, root_pid: int | None, *_: Any, **__: Any) -> None:
            self.root_pid = root_pid

        def __enter__(self) -> Any:
            if fail == self.name:
                raise OSError(f"{self.name} refused")
            log.lines.append(f"start {self.name}")
            return self

        def __exit__(self, *_: object) -> None:
            log.lines.append(f"stop {self.name}")

    class Caps(Instance):
        name = "caps"

        def granted_for(self, pids: set[int]) -> dict[str, int]:
            log.lines.append(f"caps of {sorted(pids)}")
            return {"CAP_NET_RAW": 2}

    class Syscalls(Instance):
        name = "syscalls"

        def add_pid(self, pid: int) -> None:
            log.lines.append(f"follow {pid}")

        def syscalls_for(self, pids: set[int]) -> set[str]:
            log.lines.append(f"syscalls of {sorted(pids)}")
            return {"getrandom"}

    class Rules(Instance):
        name = "audit"

        def events(self) -> list[AuditEvent]:
            return [AuditEvent(p, "openat", "EACCES", f"/denied/{p}", None, "/bin/x")
                    for p in (1, 2, 3, 5)]

    monkeypatch.setattr(sources, "start_open_tracer", start_open_tracer)
    monkeypatch.setattr(sources, "cap_capable_available", lambda: True)
    monkeypatch.setattr(sources, "CapabilityTracer", Caps)
    monkeypatch.setattr(sources, "SyscallSetTracer", Syscalls)
    monkeypatch.setattr(audit, "AuditRules", Rules)
    monkeypatch.setattr(audit, "unavailable_reason", lambda: None)


def _recorder(*pids: int, userns: tuple[int, ...] = ()) -> Recorder:
    r = Recorder(Profile(), "/")
    r.pids.update(pids)
    r.userns.update(userns)
    return r


def test_each_tracer_started_is_stopped_when_a_later_one_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    _fakes(monkeypatch, log, fail="syscalls")
    kernel = KernelSources([], lambda pid: True, audit_wanted=True)
    with pytest.raises(OSError, match="syscalls refused"), contextlib.ExitStack() as stack:
        assert kernel.start(stack, fast=True) is None
        kernel.start_tracefs(None)
    # bpftrace ran, so no cap_capable instance; the audit rules never started
    assert log.lines == ["start opens", "stop opens"]


def test_tracers_stop_in_order_and_fold_each_pid_set(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    _fakes(monkeypatch, log, fail="opens")
    kernel = KernelSources([], lambda pid: True, audit_wanted=True)
    with contextlib.ExitStack() as stack:
        assert kernel.start(stack, fast=True) == "no bpftrace here"
        kernel.start_tracefs(None)
        kernel.add_pid(7)
    assert log.lines == ["start caps", "start syscalls", "start audit", "follow 7",
                         "stop caps", "stop syscalls", "stop audit"]
    log.lines.clear()
    profile = Profile()
    kept = _recorder(1, 5, userns=(5,))
    plus = _recorder(2)  # a `+` line: outside the sandbox
    gone = _recorder(3)  # sandboxed, left out of the profile (an instance still serving)
    notes = kernel.finish(profile, [Traced(kept), Traced(plus, sandboxed=False),
                                    Traced(gone, kept=False)],
                          merge=lambda: log.lines.append("merge"))
    assert notes == []
    assert log.lines == ["merge", "syscalls of [1, 3, 5]", "caps of [1]"]
    assert profile.sources == ["tracefs:syscalls", "audit", "tracefs:cap_capable"]
    assert profile.syscalls == {"getrandom": 1}
    # audit: the kept sandboxed lines' pids, a user namespace's too
    assert profile.failed_paths == {"/denied/1": {"EACCES": 1}, "/denied/5": {"EACCES": 1}}
    assert "CAP_NET_RAW" in profile.capabilities


def test_fast_off_runs_no_tracer_and_says_why_audit_did_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    _fakes(monkeypatch, log)
    monkeypatch.setattr(sources, "cap_capable_available", lambda: False)
    monkeypatch.setattr(audit, "unavailable_reason", lambda: "auditd is not running")
    kernel = KernelSources([], lambda pid: True, audit_wanted=True)
    with contextlib.ExitStack() as stack:
        assert kernel.start(stack, fast=False) is None
        kernel.start_tracefs(None)
    profile = Profile()
    assert kernel.finish(profile, [Traced(_recorder(1))]) == [
        "audit was not used: auditd is not running"]
    assert log.lines == []
    assert profile.sources == ["syscall-inference"]


def test_bpftrace_counts_capabilities_and_its_opens_reach_the_kept_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    _fakes(monkeypatch, log)
    monkeypatch.setattr(kernel_sets, "caps_available", lambda: True)
    kernel = KernelSources([], lambda pid: True, caps=False)  # command mode, not root
    with contextlib.ExitStack() as stack:
        kernel.start(stack, fast=True)
        kernel.start_tracefs(4)
    assert log.lines == ["start opens", "start syscalls", "stop opens", "stop syscalls"]
    log.lines.clear()
    profile = Profile()
    assert kernel.finish(profile, [Traced(_recorder(4))],
                         merge=lambda: log.lines.append("merge")) == []
    assert log.lines == ["deliver opens", "merge", "syscalls of [4]"]
    assert profile.sources == ["bpftrace:open", "tracefs:syscalls", "bpftrace:cap_capable"]
    assert profile.warnings == ["opens warning"]
