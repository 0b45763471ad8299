"""Capability checks the kernel really made, from the tracefs tracepoint capability:cap_capable.

A private tracefs instance follows the traced process tree (set_event_pid + event-fork), so
other processes on the machine cost nothing and are not recorded. Kernels without the
tracepoint (e.g. Debian 12's 6.1) fall back to syscall inference alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from autosandbox.trace.capabilities import cap_name

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
EVENT = "events/capability/cap_capable"
_LINE = re.compile(r"^\s*.+?-(\d+)\s+\[\d+\].*?cap_capable:.*?\bcap (\d+),? ret (-?\d+)")


def tracefs_root() -> Path | None:
    """The mounted tracefs, mounting it if needed (we run as root); None if unavailable."""
    for root in TRACEFS_MOUNTS:
        if (root / "instances").is_dir():
            return root
    root = TRACEFS_MOUNTS[0]
    if root.is_dir() and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            subprocess.run(["mount", "-t", "tracefs", "tracefs", str(root)],
                           capture_output=True, check=False)
            if (root / "instances").is_dir():
                return root
    return None


def in_initial_pid_namespace() -> bool:
    """tracefs reports host pids; inside a container's pid namespace they are not ours.
    (Inside, /proc shows only the container's view, so ask the container markers.)"""
    if Path("/run/systemd/container").exists() or Path("/.dockerenv").exists():
        return False
    try:
        if b"container=" in Path("/proc/1/environ").read_bytes():
            return False
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return len(line.split()) == 2
    except OSError:
        return False
    return False


def cap_capable_available() -> bool:
    if not in_initial_pid_namespace():
        return False
    root = tracefs_root()
    return root is not None and (root / EVENT).is_dir()


class CapabilityTracer:
    """Counts granted capability checks per capability for one process tree.

    Denied checks (ret != 0) are not needs: unprivileged workers probe and move on.
    """

    def __init__(self, root_pid: int | None, ignore_pids: frozenset[int] = frozenset()) -> None:
        """`root_pid`: follow that process and its descendants. None: record granted checks of
        every process (minus the CAP_SYS_ADMIN memory-accounting noise, filtered in the kernel)
        and pick the traced pids afterwards with `granted_for`."""
        root = tracefs_root()
        if root is None:
            raise OSError("tracefs is not available")
        self.dir = root / "instances" / f"autosandbox-{os.getpid()}-{root_pid or 'all'}"
        self.root_pid = root_pid
        self.ignore_pids = ignore_pids
        self.granted: dict[str, int] = {}
        self.denied: dict[str, int] = {}
        self.pids_by_cap: dict[str, set[int]] = {}
        self.by_pid: dict[tuple[int, str], int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> CapabilityTracer:
        self.dir.mkdir()
        try:
            if self.root_pid is not None:
                (self.dir / "set_event_pid").write_text(f"{self.root_pid}\n")
                (self.dir / "options/event-fork").write_text("1\n")
            else:
                (self.dir / EVENT / "filter").write_text("ret == 0 && cap != 21\n")
            (self.dir / "buffer_size_kb").write_text("4096\n")
            (self.dir / EVENT / "enable").write_text("1\n")
        except OSError:
            self._remove()
            raise
        self._thread = threading.Thread(target=self._read, name="cap_capable", daemon=True)
        self._thread.start()
        return self

    def add_pid(self, pid: int) -> None:
        with (self.dir / "set_event_pid").open("a") as f:
            f.write(f"{pid}\n")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            (self.dir / EVENT / "enable").write_text("0\n")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._remove()

    def _remove(self) -> None:
        # rmdir of an instance fails while a reader holds trace_pipe open; retry briefly.
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                self._stop.wait(0.1)

    def _read(self) -> None:
        fd = os.open(self.dir / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        try:
            buf = b""
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    chunk = b""
                if not chunk:
                    if self._stop.is_set():
                        break
                    self._stop.wait(0.05)
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line.decode("utf-8", "replace"))
        finally:
            os.close(fd)

    def _line(self, line: str) -> None:
        m = _LINE.match(line)
        if m is None:
            return
        pid, cap, ret = int(m.group(1)), cap_name(int(m.group(2))), int(m.group(3))
        if pid in self.ignore_pids:
            return
        target = self.granted if ret == 0 else self.denied
        target[cap] = target.get(cap, 0) + 1
        if ret == 0:
            self.pids_by_cap.setdefault(cap, set()).add(pid)
            self.by_pid[(pid, cap)] = self.by_pid.get((pid, cap), 0) + 1

    def granted_for(self, pids: set[int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for (pid, cap), n in self.by_pid.items():
            if pid in pids:
                out[cap] = out.get(cap, 0) + n
        return out

    def items(self) -> Iterator[tuple[str, int]]:
        yield from sorted(self.granted.items())
