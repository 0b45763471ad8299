"""Holding a unit's processes at the door until we follow them.

Each wrapped Exec line starts as a tiny shell that writes `PID INDEX` to a control FIFO and
waits on a gate FIFO of its own. The server believes an announcement only from a process in
the unit's own control group, and only one live process per line; it then hands that line's
trace FIFO to the announcer's uid (0600: that uid and root alone can open it),
follows the pid (tracefs, the recorder) and opens the gate; the shell becomes strace. So the
trace covers a process from its first call, although the unit's pids are not known in
advance, and nobody else can write trace lines or announce pids.

The control FIFO stays writable by all (a DynamicUser= uid is not known in advance): what is
written there is checked, never trusted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

MAX_LINE = 64  # "PID INDEX\n": anything longer is not an announcement
MAX_REFUSED = 20  # refusals kept as examples (all are counted)


def shim_script(control: Path, gate: Path, index: int) -> str:
    """The shell that waits at the gate (paths are ours: /run/autosandbox/UNIT/...)."""
    return f"echo \"$$ {index}\" > '{control}'; read -r _ < '{gate}'; exec \"$@\""


def proc_cgroup(pid: int) -> str | None:
    """The pid's systemd control group (cgroup v2, or v1's name=systemd hierarchy)."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    v1 = None
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            return path
        if controllers == "name=systemd":
            v1 = path
    return v1


def proc_ids(pid: int) -> tuple[int, int] | None:
    """(fsuid, fsgid) of a live pid: who opens files for it."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    uid = gid = None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[4])
        elif line.startswith("Gid:"):
            gid = int(line.split()[4])
    return None if uid is None or gid is None else (uid, gid)


def slice_cgroup(slice_name: str, unit: str) -> str:
    """The control group systemd gives `unit` in `slice_name` ("a-b.slice" nests in a.slice)."""
    path = ""
    if slice_name and slice_name != "-.slice":
        parts = slice_name.removesuffix(".slice").split("-")
        path = "".join("/" + "-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))
    return f"{path}/{unit}"


def in_cgroup(pid: int, cgroup: str) -> bool:
    mine = proc_cgroup(pid)
    return mine is not None and (mine == cgroup or mine.startswith(cgroup.rstrip("/") + "/"))


class GateServer:
    """`on_pid(pid, index, uid, gid)` follows an accepted pid (before its gate opens).
    `cgroup`: the unit's control group (None: believe every announcement, for tests of the
    shell alone). `fifos[i]`: the trace FIFO of line i, handed to its announcer's uid."""

    def __init__(self, directory: Path, lines: int,
                 on_pid: Callable[[int, int, int, int], None],
                 cgroup: str | None, fifos: Sequence[Path] = (), own_dir: bool = False) -> None:
        """`own_dir`: `directory` is ours alone (removed by close())."""
        self.directory = directory if own_dir else None
        self.control = directory / "control.fifo"
        self.gates = [directory / f"gate-{i}.fifo" for i in range(lines)]
        self.fifos = list(fifos)
        self.on_pid = on_pid
        self.cgroup = cgroup
        self.opened = 0
        self.errors: list[str] = []  # pids tracefs could not follow: the syscall set has gaps
        self.refused: list[str] = []  # announcements not believed
        self.refused_count = 0
        self._live: dict[int, int] = {}  # line index -> the pid it was opened for
        # Gates are readable by all (the shell opens its gate right after announcing, before
        # we know its uid); reading another line's gate can only stall that line.
        for fifo, mode in ((self.control, 0o622), *((g, 0o644) for g in self.gates)):
            # Our directory is fresh (mkdtemp): nothing can be there already.
            os.mkfifo(fifo, 0o600)
            os.chmod(fifo, mode, follow_symlinks=False)
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
            if len(buf) > MAX_LINE:
                self._refuse("an over-long line")
                buf = b""
            for line in lines:
                self._announce(line)

    def _refuse(self, why: str) -> None:
        self.refused_count += 1
        if len(self.refused) < MAX_REFUSED and why not in self.refused:
            self.refused.append(why)

    def _announce(self, line: bytes) -> None:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            self._refuse(f"a malformed line {line[:MAX_LINE]!r}")
            return
        pid, index = int(parts[0]), int(parts[1])
        if index >= len(self.gates):
            self._refuse(f"pid {pid} for a line that does not exist ({index})")
            return
        if self.cgroup is not None and not in_cgroup(pid, self.cgroup):
            self._refuse(f"pid {pid} outside {self.cgroup} (cgroup {proc_cgroup(pid)})")
            return
        earlier = self._live.get(index)
        if earlier is not None and os.path.exists(f"/proc/{earlier}"):
            # One live process per line, announced once: a line runs again (reload, restart)
            # only once the process it was opened for is gone.
            self._refuse(f"pid {pid} for line {index} while pid {earlier} still runs it")
            return
        ids = proc_ids(pid)
        if ids is None:
            self._refuse(f"pid {pid} that is gone")
            return
        uid, gid = ids
        try:
            for path in self.fifos[index:index + 1]:
                os.chown(path, uid, gid, follow_symlinks=False)
        except OSError as exc:
            self.errors.append(f"pid {pid}: {exc}")
            return
        self._live[index] = pid
        try:
            self.on_pid(pid, index, uid, gid)
        except Exception as exc:  # a bug here must not leave the unit waiting at its gate
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

    def warnings(self) -> list[str]:
        out = []
        if self.refused_count:
            out.append(f"{self.refused_count} gate announcements were not believed and "
                       f"ignored: {'; '.join(self.refused[:5])}")
        if self.errors:
            out.append("some processes could not be followed from their start: "
                       + "; ".join(self.errors[:3]))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)
        for fifo in (self.control, *self.gates):
            with contextlib.suppress(OSError):
                fifo.unlink()
        if self.directory is not None:
            with contextlib.suppress(OSError):
                self.directory.rmdir()
