"""open(2)/openat(2) seen in the kernel by bpftrace, so that strace need not stop on them.

A server opens a file per request (nginx without open_file_cache): one ptrace stop per request
leaves a fifth of its throughput. Here a BPF program on the syscalls tracepoints reports each
distinct (path, read-or-write, ok-or-failed) once per absolute path; the rest cost a map lookup
in the kernel. strace still stops on every other call the recorder reads.

Processes are followed from given pids (command mode: ours, before the fork) or from the shells
that open a gate FIFO under a given directory (unit mode: see gate.py), through every fork and
thread; opens are reported from the moment strace executes the program, so strace's own and
ours are not. Relative paths are resolved here (dirfd from /proc at once, cwd by the recorder).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autosandbox.trace.tracefs import in_initial_pid_namespace, tracefs_root

STRLEN = 200  # bpftrace's longest string (0.17); longer paths stand for their directory
_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9/._:@+-]*$")
_RECORD = re.compile(r"^OPEN (\d+) (-?\d+) (-?\d+) (-?\d+) (.*)$")
_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")
_MARK = re.compile("\x00([0-9a-f]{2})")  # an escaped byte, once told from a literal "\\x"
AT_FDCWD = -100
PR_SET_PDEATHSIG = 1
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000
O_PATH, O_TMPFILE = 0o10000000, 0o20000000
_WRITE_BITS = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_TMPFILE


@dataclass(frozen=True, slots=True)
class OpenRecord:
    tid: int
    flags: int
    ret: int
    path: str
    dir_path: str | None  # where a dirfd-relative path started, read from /proc at once

    @property
    def errno_name(self) -> str | None:
        return errno.errorcode.get(-self.ret, f"E{-self.ret}") if self.ret < 0 else None

    def flags_text(self) -> str:
        """strace's spelling of the flags the recorder reads."""
        names = ["O_RDWR" if self.flags & O_RDWR else "O_WRONLY" if self.flags & O_WRONLY
                 else "O_RDONLY"]
        for bit, name in ((O_CREAT, "O_CREAT"), (O_TRUNC, "O_TRUNC"), (O_PATH, "O_PATH")):
            if self.flags & bit:
                names.append(name)
        if self.flags & O_TMPFILE == O_TMPFILE:
            names.append("O_TMPFILE")
        return "|".join(names)


def bpftrace_path() -> str | None:
    return shutil.which("bpftrace")


def available() -> bool:
    """bpftrace, root, the syscall tracepoints, and pids that are the kernel's own."""
    root = tracefs_root()
    return (os.geteuid() == 0 and bpftrace_path() is not None and root is not None
            and (root / "events/syscalls/sys_enter_openat").is_dir()
            and in_initial_pid_namespace())


def script(root_pids: Sequence[int], gate_prefix: str | None) -> str:
    """The BPF program. It follows `root_pids` and their descendants (@t); a shell named sh
    that opens a path starting with `gate_prefix` (the gate shim) joins them. Opens are
    reported from the program on: what strace execs (@p), and its descendants. So strace's
    and our own opens neither show nor use up the once-per-path report."""
    if gate_prefix is not None and not _SAFE_LITERAL.match(gate_prefix):
        raise ValueError(f"unsafe gate path for bpftrace: {gate_prefix!r}")
    root = tracefs_root()
    calls = [c for c in ("open", "openat")
             if root is not None and (root / f"events/syscalls/sys_enter_{c}").is_dir()]
    exit_ = ",".join(f"tracepoint:syscalls:sys_exit_{c}" for c in calls)
    join = ""
    if gate_prefix is not None:
        join = (f'tracepoint:syscalls:sys_enter_openat /!@t[tid] && comm == "sh"/ {{\n'
                f'  if (strncmp(str(args->filename), "{gate_prefix}", {len(gate_prefix)}) == 0)'
                " { @t[tid] = 1; }\n}\n")
    # open(2) has no dirfd: it behaves as openat(AT_FDCWD, ...).
    per_call = "\n".join(
        f"tracepoint:syscalls:sys_enter_{c} /@p[tid]/ {{ @fn[tid] = args->filename; "
        f"@fl[tid] = args->flags; @dfd[tid] = {'(int32)args->dfd' if c == 'openat' else -100}; }}"
        for c in calls)
    roots = "".join(f"@t[{int(pid)}] = 1; " for pid in root_pids)
    return f"""
BEGIN {{ {roots}printf("READY\\n"); }}
tracepoint:sched:sched_process_fork /@t[args->parent_pid]/ {{ @t[args->child_pid] = 1; }}
tracepoint:sched:sched_process_fork /@p[args->parent_pid]/ {{ @p[args->child_pid] = 1; }}
tracepoint:sched:sched_process_exit /@t[tid] || @p[tid]/ {{ delete(@t[tid]); delete(@p[tid]); }}
tracepoint:syscalls:sys_enter_execve,tracepoint:syscalls:sys_enter_execveat
/@t[tid] && comm == "strace"/ {{ @p[tid] = 1; }}
{join}{per_call}
{exit_} /@fn[tid]/ {{
  $p = str(@fn[tid]);
  $bit = 1 << (((@fl[tid] & {_WRITE_BITS}) != 0 ? 2 : 0) + (args->ret >= 0 ? 1 : 0));
  $show = 1;
  if (@dfd[tid] == -100 && strncmp($p, "/", 1) == 0) {{
    $seen = @seen[$p];
    $show = ($seen & $bit) == 0 ? 1 : 0;
    if ($show) {{ @seen[$p] = $seen | $bit; }}
  }}
  if ($show) {{
    printf("OPEN %d %d %d %d %r\\n", tid, @dfd[tid], @fl[tid], args->ret, buf($p, {STRLEN}));
  }}
  delete(@fn[tid]); delete(@fl[tid]); delete(@dfd[tid]);
}}
END {{ clear(@t); clear(@p); clear(@fn); clear(@fl); clear(@dfd); clear(@seen); }}
"""


def decode(raw: str) -> str | None:
    """bpftrace's %r text back to the path; None when it cannot be told apart.

    bpftrace escapes only unprintable bytes (as \\xNN) and leaves a backslash as it is, so
    `\\x41` in the text is a literal name, and `\\x0a` is a newline unless the name holds a
    literal backslash: then the file system decides, else the record is refused.
    """
    text, _, rest = raw.partition("\\x00")
    if rest.replace("\\x00", ""):
        return None  # text after the terminator: a literal "\\x00" in the name
    if "\\" not in text:
        return text

    def byte(m: re.Match[str]) -> str:
        value = int(m.group(1), 16)
        return m.group(0) if 0x20 <= value < 0x7f else f"\x00{value:02x}"

    marked = _ESCAPE.sub(byte, text)
    decoded = os.fsdecode(_MARK.sub(lambda m: chr(int(m.group(1), 16)), marked).encode("latin-1"))
    if "\\" not in marked or "\x00" not in marked:
        return decoded  # no literal backslash, or no escaped byte: one reading only
    literal = _MARK.sub(r"\\x\1", marked)
    for candidate in (decoded, literal):
        if os.path.lexists(candidate):
            return candidate
    return None


class OpenTracer:
    """Runs bpftrace for the learning session; `records` is filled as the kernel reports."""

    def __init__(self, root_pids: Sequence[int] = (), gate_prefix: str | None = None,
                 ready_timeout: float = 60.0) -> None:
        bpftrace = bpftrace_path()
        if bpftrace is None:
            raise OSError("bpftrace is not installed")
        self.records: list[OpenRecord] = []
        self.warnings: list[str] = []
        self.lost = 0
        self._unreadable = 0
        self._cut = 0
        self._closed = False
        self._ready = threading.Event()
        env = {**os.environ, "BPFTRACE_STRLEN": str(STRLEN),
               "BPFTRACE_MAP_KEYS_MAX": "65536"}
        # Paths of the BPF program come from us only (checked in script()).
        self._proc = subprocess.Popen(
            [bpftrace, "-e", script(root_pids, gate_prefix)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
            encoding="latin-1", preexec_fn=_child_setup(os.getpid()), start_new_session=True)
        self._stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, name="bpftrace", daemon=True),
                         threading.Thread(target=self._read_err, name="bpftrace-err",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + ready_timeout
        while not self._ready.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                err = " ".join(line.strip() for line in self._stderr
                               if "RLIMIT_MEMLOCK" not in line)[:300]
                raise OSError(f"bpftrace did not start: {err or 'timed out'}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        seen: set[tuple[int, str, str | None, bool, bool]] = set()
        for line in self._proc.stdout:
            if line.startswith("OPEN "):
                rec = self._parse(line.rstrip("\n"))
                if rec is None:
                    continue
                # Relative opens come every time: keep one per process and kind, so a long
                # session's memory does not grow with its requests.
                key = (rec.tid if not rec.path.startswith("/") else 0, rec.path, rec.dir_path,
                       bool(rec.flags & _WRITE_BITS), rec.ret >= 0)
                if key not in seen:
                    seen.add(key)
                    self.records.append(rec)
            elif line.startswith("READY"):
                self._ready.set()
            else:
                self._lost(line)

    def _read_err(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            if not self._lost(line) and len(self._stderr) < 20:
                self._stderr.append(line)

    def _lost(self, line: str) -> bool:
        m = re.search(r"Lost (\d+) events", line)
        if m is not None:
            self.lost += int(m.group(1))
        return m is not None

    def _parse(self, line: str) -> OpenRecord | None:
        m = _RECORD.match(line)
        if m is None:
            return None
        tid, dirfd, flags, ret = (int(m.group(i)) for i in range(1, 5))
        raw = m.group(5)
        path = decode(raw)
        if path is not None and len(os.fsencode(path)) >= STRLEN - 1:
            # Cut at STRLEN (the fd's link is no way out: by now the fd may be another file's).
            # What is left up to its last slash is a directory the file is under: recorded in
            # its place, looser than the file but never wrong.
            head = path.rpartition("/")[0]
            path = head or None
            if head:
                self._cut += 1
        dir_path = None
        if path is not None and dirfd != AT_FDCWD and not path.startswith("/"):
            with contextlib.suppress(OSError):
                dir_path = os.readlink(f"/proc/{tid}/fd/{dirfd}")
            if dir_path is None or not dir_path.startswith("/"):
                path = None
        if path is None:
            self._unreadable += 1
            return None
        return OpenRecord(tid, flags & 0xFFFFFFFF, ret, path, dir_path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)  # bpftrace detaches and runs END
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        for t in self._threads:
            t.join(5)
        if self.lost:
            self.warnings.append(f"bpftrace lost {self.lost} open events: paths may be missing")
        if self._cut:
            self.warnings.append(f"{self._cut} opened paths were longer than {STRLEN - 1} bytes: "
                                 "recorded as the directory they are under")
        if self._unreadable:
            self.warnings.append(f"{self._unreadable} opens had a path bpftrace could not "
                                 "report exactly (too long, or ambiguous)")

    def __enter__(self) -> OpenTracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        # If autosandbox is killed (SIGKILL too), bpftrace ends with it: BPF programs left
        # attached would tax every open on the machine.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # died before the prctl
            os._exit(1)
    return setup
