"""The pids of a unit's cgroup, read now or sampled while it runs (audit records name pids;
the cgroup says which are the unit's)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autosandbox import procs
from autosandbox.systemd import runstate
from autosandbox.systemd.manager import Manager

# A process as the kernel knows it: its pid and start time (a pid is reused, the pair is not)
Proc = tuple[int, int]


def roots() -> list[Path]:
    """Where systemd's cgroup tree is mounted: cgroup v2 (unified), and a hybrid's or a
    legacy setup's name=systemd and v2 parts (systemd-nspawn on a host without systemd)."""
    base = Path("/sys/fs/cgroup")
    return [r for r in (base, base / "systemd", base / "unified")
            if (r / "cgroup.procs").exists()]


def cgroup_pids(control_group: str) -> set[int]:
    """Pids in a unit's cgroup (and its children), read now."""
    pids: set[int] = set()
    for root in roots():
        d = root / control_group.lstrip("/")
        if d.is_dir() and d != root:
            for listing in d.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids |= {int(x) for x in listing.read_text().split()}
    return pids


def cgroup_members(control_group: str) -> set[Proc]:
    """The unit's processes now, each with its start time."""
    out: set[Proc] = set()
    for pid in cgroup_pids(control_group):
        started = procs.start_time(pid)
        if started is not None:
            out.add((pid, started))
    return out


def describe(pid: int) -> str:
    try:
        return f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}"
    except OSError:
        return str(pid)


def found_members(mgr: Manager, unit: str, fallback: str = "") -> set[Proc]:
    """The unit's processes before we change it, kept in the run's record too: `reset` after a
    kill ends what a trial started and its stop left (end_leftovers), never one of these."""
    found = cgroup_members(mgr.control_group(unit, fallback))
    note_found(unit, found)
    return found


def note_found(unit: str, found: set[Proc]) -> None:
    runstate.record("found", unit=unit, procs=sorted(found))


def leftovers(control_group: str, found: set[Proc], before: int) -> set[Proc]:
    """Processes in a stopped unit's cgroup that were not there as found and that started
    before the stop (`before`, procs.now_ticks()): one started since is a new run's (a socket
    that starts the unit again at once)."""
    return {p for p in cgroup_members(control_group) - found if p[1] < before}


def end_leftovers(control_group: str, found: set[Proc], before: int,
                  grace: float = 5.0) -> list[str]:
    """End the leftovers: what our own restarts started and the stop left (KillMode=process or
    none: exim4's init script, whose stop found no daemon under a candidate's sandbox, left it
    serving port 25 with that sandbox, and every later start failed to bind). SIGTERM, then
    SIGKILL after `grace` s; each by pid and start time. Returns "PID COMM" of each one."""
    left = sorted(leftovers(control_group, found, before))
    if not left:
        return []
    names = [describe(pid) for pid, _ in left]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        for pid, started in left:
            if procs.alive(pid, started):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(procs.alive(p, s) for p, s in left) and time.monotonic() < deadline:
            time.sleep(0.1)
    return names


def stop_ending_leftovers(mgr: Manager, unit: str, found: set[Proc],
                          fallback: str = "") -> list[str]:
    """Stop the unit, then end what our restarts started and the stop left (end_leftovers)."""
    before = procs.now_ticks()
    mgr.stop(unit)
    return end_leftovers(mgr.control_group(unit, fallback), found, before)


class CgroupSampler:
    """Collects the pids of a unit's cgroup every `interval` s while it runs."""

    def __init__(self, control_group_of: Callable[[], str], interval: float = 0.2) -> None:
        self.control_group_of = control_group_of
        self.interval = interval
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cgroup-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.pids |= cgroup_pids(self.control_group_of())
            self._stop.wait(self.interval)

    def __enter__(self) -> CgroupSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
