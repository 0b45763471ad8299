"""Where tracefs is, and whether its pids are ours (they are the kernel's global pids)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path

from autosandbox import commands
from autosandbox.systemd import runstate

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
SYSCALL_EVENT = "events/raw_syscalls/sys_enter"


def tracefs_root() -> Path | None:
    """The mounted tracefs, mounting it if needed (we run as root); None if unavailable."""
    for root in TRACEFS_MOUNTS:
        if (root / "instances").is_dir():
            return root
    root = TRACEFS_MOUNTS[0]
    if root.is_dir() and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            commands.run(["mount", "-t", "tracefs", "tracefs", str(root)], check=False)
            if (root / "instances").is_dir():
                return root
    return None


@functools.cache
def in_initial_pid_namespace() -> bool:
    """Whether tracefs pids are our pids (tracefs reports the kernel's global pids, which a
    container's processes do not know). Asked of the kernel itself: a probe instance follows
    this process, which makes a getppid() it must see with our own pid."""
    root = tracefs_root()
    if root is None or not (root / SYSCALL_EVENT).is_dir():
        return False
    probe = root / "instances" / f"autosandbox-probe-{os.getpid()}-ns"
    try:
        runstate.record("tracefs", path=str(probe))
        probe.mkdir()
    except OSError:
        return False
    try:
        (probe / "set_event_pid").write_text(f"{os.getpid()}\n")
        (probe / SYSCALL_EVENT / "filter").write_text("id == 110\n")  # getppid on x86_64
        (probe / SYSCALL_EVENT / "enable").write_text("1\n")
        for _ in range(3):
            os.getppid()
        (probe / SYSCALL_EVENT / "enable").write_text("0\n")
        text = (probe / "trace").read_text()
        return bool(re.search(rf"-{os.getpid()}\s+\[", text))
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
