"""The pids of a unit's cgroup, read now or sampled while it runs (audit records name pids;
the cgroup says which are the unit's)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path


def cgroup_pids(control_group: str) -> set[int]:
    """Pids in a unit's cgroup (and its children), read now."""
    pids: set[int] = set()
    root = Path("/sys/fs/cgroup") / control_group.lstrip("/")
    if not root.is_dir():
        return pids
    for procs in root.rglob("cgroup.procs"):
        try:
            pids |= {int(x) for x in procs.read_text().split()}
        except (OSError, ValueError):
            continue
    return pids


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
