"""Holding a unit's processes at the door until tracefs follows them.

Each wrapped Exec line starts as a tiny shell that writes its pid to a control FIFO and waits
on a gate FIFO of its own; the server adds the pid to the tracefs instance, then opens the
gate, and the shell becomes strace. So the syscall set covers a process from its first call,
although the unit's pids are not known in advance.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


def shim_script(control: Path, gate: Path, index: int) -> str:
    """The shell that waits at the gate (paths are ours: /run/autosandbox/UNIT/...)."""
    return f"echo \"$$ {index}\" > '{control}'; read -r _ < '{gate}'; exec \"$@\""


class GateServer:
    def __init__(self, directory: Path, lines: int, on_pid: Callable[[int], None],
                 world_writable: bool) -> None:
        self.control = directory / "control.fifo"
        self.gates = [directory / f"gate-{i}.fifo" for i in range(lines)]
        self.on_pid = on_pid
        self.opened = 0
        self.errors: list[str] = []  # pids tracefs could not follow: the syscall set has gaps
        for fifo, mode in ((self.control, 0o622 if world_writable else 0o600),
                           *((g, 0o644 if world_writable else 0o600) for g in self.gates)):
            with contextlib.suppress(FileNotFoundError):
                fifo.unlink()  # left by a killed run
            os.mkfifo(fifo, 0o600)
            os.chmod(fifo, mode)
        # O_RDWR: the control FIFO never reports end-of-file between two shims.
        self._fd = os.open(self.control, os.O_RDWR | os.O_NONBLOCK)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gate", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                self._stop.wait(0.005)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                parts = line.split()
                if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
                    continue
                pid, index = int(parts[0]), int(parts[1])
                if index >= len(self.gates):
                    continue
                try:
                    self.on_pid(pid)
                except OSError as exc:
                    self.errors.append(f"pid {pid}: {exc}")
                self._open_gate(self.gates[index])  # never leave the unit waiting

    def _open_gate(self, gate: Path) -> None:
        """Write to the gate once its shell reads it (give up after 10 s: never hang here)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    return
                time.sleep(0.002)
                continue
            try:
                os.write(fd, b"go\n")
                self.opened += 1
            finally:
                os.close(fd)
            return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)
        for fifo in (self.control, *self.gates):
            with contextlib.suppress(OSError):
                fifo.unlink()
