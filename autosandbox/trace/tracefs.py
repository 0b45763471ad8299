"""Capability checks the kernel really made, from the tracefs tracepoint capability:cap_capable.

A private tracefs instance follows the traced process tree (set_event_pid + event-fork), so
other processes on the machine cost nothing and are not recorded. Kernels without the
tracepoint (e.g. Debian 12's 6.1) fall back to syscall inference alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autosandbox.linux.capabilities import cap_name
from autosandbox.linux.tracefs import in_initial_pid_namespace, tracefs_root
from autosandbox.systemd import runstate

log = logging.getLogger(__name__)
EVENT = "events/capability/cap_capable"
POLL_MS = 1000  # the longest a reader sleeps without a line (a lost wake-up costs this)
_LINE = re.compile(r"^\s*.+?-(\d+)\s+\[\d+\].*?cap_capable:.*?\bcap (\d+),? ret (-?\d+)")


def cap_capable_available() -> bool:
    if not in_initial_pid_namespace():
        return False
    root = tracefs_root()
    return root is not None and (root / EVENT).is_dir()


class _Instance:
    """A private tracefs instance: its own buffer, pid filter and events; a reader thread
    hands each line to `_line`; removed on exit."""

    dir: Path
    event: str  # the one event the instance enables

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake: tuple[int, int] | None = None  # a pipe: stopping wakes the reader's poll

    @staticmethod
    def sweep(root: Path) -> None:
        """Remove instances left by an autosandbox that was killed (SIGKILL skips cleanup)."""
        for inst in root.glob("instances/autosandbox-*"):
            pid = inst.name.split("-")[-2] if inst.name.count("-") >= 2 else ""
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                runstate.remove_tracefs_instance(inst)

    def _start_reader(self, name: str) -> None:
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._read, args=(self._wake[0],), name=name,
                                        daemon=True)
        self._thread.start()

    def _stop_reader(self) -> None:
        self._stop.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._wake is not None and not (self._thread and self._thread.is_alive()):
            for end in self._wake:
                os.close(end)
            self._wake = None

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

    def _read(self, wake: int) -> None:
        fd = os.open(self.dir / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        poller = select.poll()
        for f in (fd, wake):
            poller.register(f, select.POLLIN)
        try:
            buf = b""
            ready = False
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    chunk = b""
                if not chunk:
                    if self._stop.is_set():
                        break
                    if ready:  # said readable, read nothing: never spin on that
                        self._stop.wait(0.05)
                    # Asleep until the kernel has a line (or we stop): a 50 ms timer here
                    # woke the learner 20 times a second on the CPU of the server it traces.
                    ready = bool(poller.poll(POLL_MS))
                    continue
                ready = False
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line.decode("utf-8", "replace"))
        finally:
            os.close(fd)

    def _line(self, line: str) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        began = time.monotonic()
        with contextlib.suppress(OSError):
            (self.dir / self.event / "enable").write_text("0\n")
        self._stop_reader()
        self._remove()
        log.debug("tracefs instance %s removed in %.2f s", self.dir.name,
                  time.monotonic() - began)


class CapabilityTracer(_Instance):
    """Counts granted capability checks per capability for one process tree.

    Denied checks (ret != 0) are not needs: unprivileged workers probe and move on.
    """

    event = EVENT

    def __init__(self, root_pid: int | None, ignore_pids: frozenset[int] = frozenset()) -> None:
        """`root_pid`: follow that process and its descendants. None: record granted checks of
        every process (minus the CAP_SYS_ADMIN memory-accounting noise, filtered in the kernel)
        and pick the traced pids afterwards with `granted_for`."""
        root = tracefs_root()
        if root is None:
            raise OSError("tracefs is not available")
        self.sweep(root)
        self.dir = root / "instances" / f"autosandbox-{os.getpid()}-{root_pid or 'all'}"
        self.root_pid = root_pid
        self.ignore_pids = ignore_pids
        self.granted: dict[str, int] = {}
        self.denied: dict[str, int] = {}
        self.pids_by_cap: dict[str, set[int]] = {}
        self.by_pid: dict[tuple[int, str], int] = {}
        super().__init__()

    def __enter__(self) -> CapabilityTracer:
        runstate.record("tracefs", path=str(self.dir))
        log.debug("tracefs instance %s: %s", self.dir.name, self.event)
        self.dir.mkdir()
        try:
            if self.root_pid is not None:
                (self.dir / "set_event_pid").write_text(f"{self.root_pid}\n")
                (self.dir / "options/event-fork").write_text("1\n")
            else:
                (self.dir / EVENT / "filter").write_text("ret == 0 && cap != 21\n")
            (self.dir / "buffer_size_kb").write_text("4096\n")
            (self.dir / EVENT / "enable").write_text("1\n")
        except BaseException:  # OSError, or interrupted: leave no instance behind
            self._remove()
            raise
        self._start_reader("cap_capable")
        return self

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



# A syscall event's line: "COMM-PID [CPU] FLAGS TIMESTAMP: sys_NAME(ARGS". COMM (15 bytes at
# most, the traced program's choice) cannot hold all of what follows it, so it cannot forge it.
_CALL = re.compile(r"^\s*.{0,15}?-(\d+)\s+\[\d+\]\s+\S+\s+\d+\.\d+: sys_(\w+)\(")
# Events named apart from the call (the kernel's "new" stat family and a few others)
_EVENT_ALIASES = {"newfstat": "fstat", "newstat": "stat", "newlstat": "lstat",
                  "newuname": "uname", "sendfile64": "sendfile", "umount": "umount2"}
SYSCALL_EVENTS = "events/syscalls"


def syscall_tracer_available() -> bool:
    root = tracefs_root()
    return (in_initial_pid_namespace() and root is not None
            and (root / SYSCALL_EVENTS / "sys_enter_read").is_dir())


class SyscallSetTracer(_Instance):
    """The set of system calls a process tree makes, from tracefs, at a fraction of ptrace's cost.

    The instance follows `root_pid` (strace) and everything it forks; strace's own calls are
    filtered out in the kernel. Every syscall's own entry event is enabled, and each is
    disabled as soon as the program (`is_program(pid)`: a pid of a sandboxed line strace
    reported) makes that call: a call already seen then costs the kernel one look-up in a table,
    and after start-up the stream goes quiet. (Before: one raw_syscalls event whose filter grew
    by one `id != N` per call seen; with it every other process on the machine paid ~66 ns per
    call, now ~7: benchmarks/syscall_cost.py.) Calls of strace's helpers and of `+` lines
    never silence a call.
    """

    event = SYSCALL_EVENTS

    def __init__(self, root_pid: int | None, is_program: Callable[[int], bool]) -> None:
        """`root_pid` None: follow nothing until `add_pid` (a unit's processes, each added
        before it starts strace); strace itself is then left out by its name."""
        self.is_program = is_program
        self.enabled = False
        self.silenced: set[str] = set()  # events disabled: their call was seen
        root = tracefs_root()
        if root is None or not (root / SYSCALL_EVENTS).is_dir():
            raise OSError("tracefs syscall events are not available")
        self.sweep(root)
        self.dir = root / "instances" / f"autosandbox-sys-{os.getpid()}-{root_pid or 'unit'}"
        self.root_pid = root_pid
        self.seen: dict[str, set[int]] = {}  # syscall name -> pids
        self._lock = threading.Lock()
        super().__init__()

    def __enter__(self) -> SyscallSetTracer:
        runstate.record("tracefs", path=str(self.dir))
        log.debug("tracefs instance %s: %s", self.dir.name, self.event)
        self.dir.mkdir()
        try:
            (self.dir / "options/event-fork").write_text("1\n")
            (self.dir / "buffer_size_kb").write_text("2048\n")
            # one filter for every event of the subsystem: strace's own calls never show
            mine = (f"common_pid != {self.root_pid}" if self.root_pid is not None
                    else 'comm != "strace"')
            (self.dir / SYSCALL_EVENTS / "filter").write_text(mine + "\n")
            if self.root_pid is not None:
                self.add_pid(self.root_pid)
        except BaseException:  # OSError, or interrupted: leave no instance behind
            self._remove()
            raise
        self._start_reader("syscalls")
        return self

    def add_pid(self, pid: int) -> None:
        """Follow `pid` too, and what it forks from now on."""
        # O_APPEND without O_CREAT: 6.1 refuses open(..., "a") on tracefs with EINVAL
        fd = os.open(self.dir / "set_event_pid", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)
        if not self.enabled:  # an empty pid list would mean every process
            # each call's entry event (~360: 0.2 s); exit events stay off
            failed = []
            for event in sorted((self.dir / SYSCALL_EVENTS).glob("sys_enter_*")):
                try:
                    (event / "enable").write_text("1\n")
                except OSError:
                    failed.append(event.name)
            if failed:  # such a call is not in the set: validation finds it missing
                log.warning("tracefs refused %d syscall events: %s", len(failed),
                            " ".join(failed[:5]))
            self.enabled = True

    def _line(self, line: str) -> None:
        m = _CALL.match(line)
        if m is None:
            return
        pid, event = int(m.group(1)), m.group(2)
        name = _EVENT_ALIASES.get(event, event)
        with self._lock:
            self.seen.setdefault(name, set()).add(pid)
            if event not in self.silenced and self.is_program(pid):
                self.silenced.add(event)
                with contextlib.suppress(OSError):
                    (self.dir / SYSCALL_EVENTS / f"sys_enter_{event}" / "enable").write_text(
                        "0\n")

    def syscalls_for(self, pids: set[int]) -> set[str]:
        with self._lock:
            return {name for name, who in self.seen.items() if who & pids}
