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

A per-connection template (socket Accept=yes) runs many instances of each line at once, each
in a control group of its own: the server believes a process of an instance started in our
window (systemd/instances.py), one live process per line and instance, and each announcement
gets a gate and a trace FIFO of its own (`gate-PID.fifo`, created once the pid is believed;
the gate says which FIFO strace writes to), so concurrent instances never share a stream.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from autosandbox.systemd.instances import Instances, slice_path

MAX_LINE = 64  # "PID INDEX\n": anything longer is not an announcement
MAX_REFUSED = 20  # refusals kept as examples (all are counted)


def _gate_open(privileged: bool) -> str:
    """How a shim opens its gate: a `+` line's (outside the sandbox) read-write, which is how
    the BPF program (opens.py) tells its process apart from the sandboxed lines'."""
    return "<>" if privileged else "<"


def shim_script(control: Path, gate: Path, index: int, privileged: bool = False) -> str:
    """The shell that waits at the gate (paths are ours: /run/autosandbox/UNIT/...)."""
    return (f"echo \"$$ {index}\" > '{control}'; read -r _ {_gate_open(privileged)} '{gate}'; "
            "exec \"$@\"")


def instance_shim_script(control: Path, index: int, wait_s: int = 120,
                         privileged: bool = False) -> str:
    """The shell of a per-connection instance: it waits for its own gate (made once its pid
    is believed), reads the trace FIFO from it and hands it to strace (`$1`) as `-o`; a gate
    that never comes (not believed) fails the instance after `wait_s` s."""
    gate = f"{control.parent}/gate-"
    return (f"echo \"$$ {index}\" > '{control}'; g='{gate}'$$.fifo; n=0; "
            f"while [ ! -p \"$g\" ]; do n=$((n+1)); [ $n -le {wait_s * 50} ] || exit 1; "
            f"sleep 0.02; done; read -r o {_gate_open(privileged)} \"$g\"; s=$1; shift; "
            "exec \"$s\" -o \"$o\" \"$@\"")


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


def proc_tracer(pid: int) -> int:
    """The pid tracing `pid` (0: none, or gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def slice_cgroup(slice_name: str, unit: str) -> str:
    """The control group systemd gives `unit` in `slice_name` ("a-b.slice" nests in a.slice)."""
    return f"{slice_path(slice_name)}/{unit}"


def in_cgroup(pid: int, cgroup: str) -> bool:
    mine = proc_cgroup(pid)
    return mine is not None and (mine == cgroup or mine.startswith(cgroup.rstrip("/") + "/"))


class GateServer:
    """`on_pid(pid, index, uid, gid)` follows an accepted pid (before its gate opens).
    `cgroup`: the unit's control group (None: believe every announcement, for tests of the
    shell alone), or the instances of a per-connection template: then `on_pid` returns the
    announcement's own trace FIFO (handed to the announcer's uid, named on its gate).
    `fifos[i]`: the trace FIFO of line i, handed to its announcer's uid."""

    def __init__(self, directory: Path, lines: int,
                 on_pid: Callable[[int, int, int, int], Path | None],
                 cgroup: str | Instances | None, fifos: Sequence[Path] = (),
                 own_dir: bool = False) -> None:
        """`own_dir`: `directory` is ours alone (removed by close())."""
        self.directory = directory if own_dir else None
        self.control = directory / "control.fifo"
        self.per_instance = isinstance(cgroup, Instances)
        self.lines = lines
        self.gates = [] if self.per_instance else \
            [directory / f"gate-{i}.fifo" for i in range(lines)]
        self.fifos = list(fifos)
        self.on_pid = on_pid
        self.cgroup = cgroup
        self.instances: list[str] = []  # instance control groups believed, in order
        self.opened = 0
        self.errors: list[str] = []  # pids tracefs could not follow: the syscall set has gaps
        self.refused: list[str] = []  # announcements not believed
        self.refused_count = 0
        # (instance control group or "", line index) -> the pid it was opened for
        self._live: dict[tuple[str, int], int] = {}
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
        if index >= self.lines:
            self._refuse(f"pid {pid} for a line that does not exist ({index})")
            return
        own = ""
        if isinstance(self.cgroup, Instances):
            found = self.cgroup.unit_cgroup(proc_cgroup(pid))
            if found is None:
                self._refuse(f"pid {pid} not in an instance of {self.cgroup.prefix}@.service "
                             f"started while traced (cgroup {proc_cgroup(pid)})")
                return
            own = found
        elif self.cgroup is not None and not in_cgroup(pid, self.cgroup):
            self._refuse(f"pid {pid} outside {self.cgroup} (cgroup {proc_cgroup(pid)})")
            return
        earlier = self._live.get((own, index))
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
        self._live[(own, index)] = pid
        try:
            fifo = self.on_pid(pid, index, uid, gid)
        except Exception as exc:  # a bug here must not leave the unit waiting at its gate
            self.errors.append(f"pid {pid}: {exc}")
            fifo = None
        if not self.per_instance:
            self._open_gate(self.gates[index])  # never leave the unit waiting
            return
        if fifo is None:
            return  # not followed: its shell gives up (instance_shim_script)
        if own not in self.instances:
            self.instances.append(own)
        self._instance_gate(pid, fifo, uid, gid)

    def _instance_gate(self, pid: int, fifo: Path, uid: int, gid: int) -> None:
        """The announcer's own gate, made now (our directory: nobody else can make it),
        carrying the path of its own trace FIFO."""
        gate = self.control.parent / f"gate-{pid}.fifo"
        try:
            os.chown(fifo, uid, gid, follow_symlinks=False)
            os.mkfifo(gate, 0o600)
            os.chmod(gate, 0o644, follow_symlinks=False)
        except OSError as exc:
            self.errors.append(f"pid {pid}: {exc}")
            return
        try:
            self._open_gate(gate, f"{fifo}\n".encode())
        finally:
            with contextlib.suppress(OSError):
                gate.unlink()

    def _open_gate(self, gate: Path, message: bytes = b"go\n") -> None:
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
                os.write(fd, message)
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
