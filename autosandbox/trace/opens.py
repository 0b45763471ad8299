"""open(2)/openat(2) seen in the kernel by bpftrace, so that strace need not stop on them.

A server opens a file per request (nginx without open_file_cache): one ptrace stop per request
leaves a fifth of its throughput. Here a BPF program on the open calls' exit tracepoints reports
each distinct (path, read-or-write, ok-or-failed) once per absolute path; the rest cost a map
lookup in the kernel. It reads the call's arguments from the registers the kernel saved at
entry (found once at the start, x86-64), not from an entry probe: that halved its cost per open
(an entry probe and a map handing its arguments to the exit, ~0.6 us a file here, measured
with kernel.bpf_stats_enabled). strace still stops on every other call the recorder reads.

Processes are followed from given pids (command mode: ours, before the fork) or from the shells
that open a gate FIFO under a given directory (unit mode: see gate.py), through every fork and
thread; opens are reported from the moment strace executes the program, so strace's own and
ours are not. Relative paths are resolved here (dirfd from /proc at once, cwd by the recorder),
checked against the directory the kernel names by its inode; the kernel also names the root of a
process in a chroot, so the recorder places its absolute paths below the right directory.
The same program records the hot calls of trace/kernel.py (accept, setsockopt, fcntl, mmap) and
the granted capability checks (trace/kernel_sets.py). Every de-duplication
is per class (kernel_sets.py): what a unit's `+` line did never hides the same of a sandboxed line.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autosandbox import commands, interrupts, procs
from autosandbox.linux.capabilities import cap_name
from autosandbox.linux.files import is_inode
from autosandbox.linux.tracefs import in_initial_pid_namespace, tracefs_root
from autosandbox.systemd import runstate
from autosandbox.trace import kernel, kernel_sets, syscall_regs
from autosandbox.trace.kernel import CallRecord
from autosandbox.trace.kernel_sets import PRIVILEGED, SANDBOXED
from autosandbox.trace.syscall_regs import arg

log = logging.getLogger(__name__)
STRLEN = 200  # bpftrace's longest string (0.17); a path this long is left out, never cut
# Records of threads no recorder follows yet (strace reports a fork after bpftrace does): held
# until the end, at most this many; relative opens are deduplicated in at most SEEN_MAX keys.
PENDING_MAX = 8192
SEEN_MAX = 16384
_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9/._:@+-]*$")
_RECORD = re.compile(r"^OPEN (\d+) (-?\d+) (-?\d+) (-?\d+) (\d+) (\d+) (.*)$")
# getpgid() of this pid (above any pid_max: it fails with ESRCH) by us is the flush marker
MARK_PID = 0x7FFFFFF0
CALIBRATE_PID = MARK_PID + 1  # ... and this one's finds the syscall registers (script())
_MARK_LINE = re.compile(r"^MARK (\d+)$")
_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")
_MARK = re.compile("\x00([0-9a-f]{2})")  # an escaped byte, once told from a literal "\\x"
AT_FDCWD = -100
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000
O_PATH, O_TMPFILE = 0o10000000, 0o20000000
_WRITE_BITS = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_TMPFILE


@dataclass(frozen=True, slots=True)
class OpenRecord:
    tid: int
    flags: int
    ret: int
    path: str
    dir_path: str | None  # where a relative path started, read from /proc at once
    # The kernel's (device, inode) of the opener's root when it is not strace's (a chroot),
    # and of the directory a relative path started at: the recorder places the path by them,
    # not by what it knows so far of the process (strace's line of a chroot or chdir may
    # come after this record).
    root: tuple[int, int] | None = None
    start_dir: tuple[int, int] | None = None

    @property
    def raw_absolute(self) -> bool:
        return self.path.startswith("/")

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


Record = OpenRecord | CallRecord  # what the BPF program reports as it goes


def bpftrace_path() -> str | None:
    return shutil.which("bpftrace")


def available() -> bool:
    """bpftrace, root, the syscall tracepoints, pids that are the kernel's own, and x86-64
    (whose saved registers the exit probes read an open's arguments from)."""
    root = tracefs_root()
    return (os.geteuid() == 0 and bpftrace_path() is not None and root is not None
            and (root / "events/syscalls/sys_exit_openat").is_dir()
            and platform.machine() == "x86_64" and in_initial_pid_namespace())


def script(root_pids: Sequence[int], gate_prefix: str | None,
           program_pids: Sequence[int] = ()) -> str:
    """The BPF program. It follows `root_pids` and their descendants (@t); a shell named sh
    that opens a path starting with `gate_prefix` (the gate shim) joins them. Opens are
    reported from the program on: what strace execs (@p), and its descendants. So strace's
    and our own opens neither show nor use up the once-per-path report. `program_pids` are
    the program's from the start, in our root (benchmarks/hook_cost.py: what the program
    costs a server that is already running)."""
    if gate_prefix is not None and not _SAFE_LITERAL.match(gate_prefix):
        raise ValueError(f"unsafe gate path for bpftrace: {gate_prefix!r}")
    if gate_prefix is not None and len(gate_prefix) >= 64:  # bpftrace 0.17's literal limit
        raise ValueError(f"gate path too long for bpftrace's strings: {gate_prefix}")
    root = tracefs_root()
    calls = [c for c in ("open", "openat")
             if root is not None and (root / f"events/syscalls/sys_exit_{c}").is_dir()]
    join = ""
    if gate_prefix is not None:
        # a `+` line's shim opens its gate read-write (gate.py): the privileged class. At the
        # open's exit, which runs before the shim's next instruction: nothing it does escapes.
        join = (f'if (strncmp($p, "{gate_prefix}", {len(gate_prefix)}) == 0)'
                f" {{ @t[tid] = ($fl & 3) == 2 ? {PRIVILEGED} : {SANDBOXED}; }}")
    roots = "".join(f"@t[{int(pid)}] = {SANDBOXED}; " for pid in root_pids)
    if program_pids:  # BEGIN runs in bpftrace, whose root is ours
        roots += "".join(f"@p[{int(pid)}] = {SANDBOXED}; " for pid in program_pids)
        roots += "@root0 = (uint64)curtask->fs->root.dentry; "
    return f"""
BEGIN {{ @t[0] = 0; delete(@t[0]); @regoff = (uint64)0; {roots}printf("READY\\n"); }}
{_mark_probe()}
tracepoint:sched:sched_process_fork {{ $pp = args->parent_pid; $cp = args->child_pid;
  if (@t[$pp]) {{ @t[$cp] = @t[$pp]; if (@s[$pp]) {{ @s[$cp] = 1; }} }}
  if (@p[$pp]) {{ @p[$cp] = @p[$pp]; }} }}
tracepoint:sched:sched_process_exit /@t[tid] || @p[tid]/ {{
  delete(@t[tid]); delete(@p[tid]); delete(@s[tid]); }}
tracepoint:sched:sched_process_exec /@t[tid]/ {{ $c = @t[tid];
  if (@s[tid]) {{ @p[tid] = $c; delete(@s[tid]);
    @root0 = (uint64)curtask->fs->root.dentry; {kernel_sets.exec_marks()} }}
  else if (comm == "strace" && !@p[tid]) {{ @s[tid] = 1; }} }}
{"".join(_exit_probe(c, join) for c in calls)}
{kernel.script()}{kernel_sets.script()}
END {{ {kernel_sets.end()} clear(@t); clear(@p); clear(@s); clear(@seen); clear(@root0);
  clear(@regoff); {kernel.end_clears()} }}
"""


def _mark_probe() -> str:
    """Our getpgid() of MARK_PID marks a CPU's records printed (flush()); of CALIBRATE_PID it
    finds where the kernel keeps a task's syscall registers (x86-64 pt_regs at the top of its
    stack: 16 KiB, 32 KiB with KASAN; 16 bytes lower with FRED), by the call's own number and
    argument in them, so the exit probes read a call's arguments with no entry probe
    (syscall_regs.py). At the call's exit too: its registers are still there."""
    size = "sizeof(struct pt_regs)"
    nr = syscall_regs.NR["getpgid"]
    tries = "\n".join(
        f"    $r = (struct pt_regs *)($s + {stack - pad} - {size});\n"
        f"    if ($o == 0 && $r->orig_ax == {nr} && $r->di == {CALIBRATE_PID})"
        f" {{ $o = (uint64){stack - pad} - {size}; }}"
        for stack in (16384, 32768) for pad in (0, 16))
    # Until calibrated, no mark: a getpgid() of ours that fails with ESRCH is the calibration
    # (of a pid that cannot exist), and where no candidate holds it, REGS 0 says it failed.
    return (f"tracepoint:syscalls:sys_exit_getpgid /pid == {os.getpid()}/ {{\n"
            "  $s = (uint64)curtask->stack; $o = @regoff;\n"
            f"  if ($o != 0) {{ $r = (struct pt_regs *)($s + $o);\n"
            f"    if ($r->orig_ax == {nr} && $r->di == {MARK_PID})"
            ' { printf("MARK %d\\n", cpu); }\n'
            "  } else {\n"
            f"{tries}\n"
            f"    if ($o != 0 || args->ret == -{errno.ESRCH})"
            ' { @regoff = $o; printf("REGS %lu\\n", $o); }\n'
            "  }\n}")


def _exit_probe(call: str, join: str) -> str:
    """One open's record, at its exit: arguments from the task's saved registers (no enter
    probe, no map between enter and exit: a server opens a file per request), the result from
    the tracepoint. Absolute paths once per (path, write, ok, class); relative ones with the
    directory they started at, each time (the reader keeps one per process)."""
    nr = syscall_regs.NR[call]
    first = 1 if call == "openat" else 0  # openat(dirfd, path, flags, ...), open(path, flags)
    dfd = f"(int32){arg(0)}" if first else str(AT_FDCWD)
    args = f"$p = str(uptr({arg(first)})); $fl = (uint64)(uint32){arg(first + 1)};"
    joining = (f'}} else if (comm == "sh" && !@t[tid]) {{\n  {syscall_regs.LOAD} {args}\n'
               f"  if ($regs->orig_ax == {nr}) {{ {join} }}\n" if join else "")
    # The path is read before the registers are checked (not load_or_leave): the other order
    # put bpftrace 0.17's program for openat over the BPF stack's 512 bytes.
    return f"""tracepoint:syscalls:sys_exit_{call} {{ $c = @p[tid]; if ($c) {{
  {syscall_regs.LOAD} {args}
  {syscall_regs.leave_unless(call)}
  $ret = args->ret; $dfd = {dfd};
  $bit = 1 << ((($fl & {_WRITE_BITS}) != 0 ? 2 : 0) + ($ret >= 0 ? 1 : 0)
               + ($c == {PRIVILEGED} ? 4 : 0));
  $show = 1; $dev = (uint32)0; $ino = (uint64)0;
  if (strncmp($p, "/", 1) == 0) {{
    $root = curtask->fs->root.dentry;
    if ((uint64)$root != @root0) {{
      $dev = $root->d_sb->s_dev; $ino = $root->d_inode->i_ino;
    }} else {{
      $seen = @seen[$p];
      $show = ($seen & $bit) == 0 ? 1 : 0;
      if ($show) {{ @seen[$p] = $seen | $bit; }}
    }}
  }} else if ($dfd == -100) {{
    $cwd = curtask->fs->pwd.dentry; $dev = $cwd->d_sb->s_dev; $ino = $cwd->d_inode->i_ino;
  }} else if ($dfd >= 0 && (uint64)$dfd < (uint64)curtask->files->fdt->max_fds) {{
    $dir = *(curtask->files->fdt->fd + $dfd);
    $dev = $dir->f_inode->i_sb->s_dev; $ino = $dir->f_inode->i_ino;
  }}
  if ($show) {{
    printf("OPEN %d %d %d %d %u %lu %r\\n", (int32)tid, (int32)$dfd, (int32)$fl,
           (int32)$ret, $dev, $ino, buf($p, {STRLEN}));
  }}
{joining}}} }}
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
                 ready_timeout: float = 60.0,
                 on_record: Callable[[Record], bool] | None = None,
                 program_pids: Sequence[int] = ()) -> None:
        """`on_record` takes each record as it comes and says whether a followed process made
        it; those it refuses wait (bounded) for `deliver()`. Without it `records` keeps all.
        `program_pids`: see script()."""
        bpftrace = bpftrace_path()
        if bpftrace is None:
            raise OSError("bpftrace is not installed")
        self.records: list[Record] = []
        self.on_record = on_record
        self._pending: collections.deque[Record] = collections.deque()
        self.overflow = 0  # records of unknown threads dropped once PENDING_MAX were held
        self.foreign = 0  # records no recorder took, even at the end
        self.unattributed = 0  # overflow + foreign, once delivered: opens the profile misses
        self.warnings: list[str] = []
        # class (kernel_sets) -> capability -> checks the kernel granted (printed at the end)
        self.granted: dict[int, dict[str, int]] = {}
        self.lost = 0
        self._unreadable = 0
        self._cut = 0
        self._closed = False
        self._ready = threading.Event()
        self._calibrated = threading.Event()
        self._regs = 0  # where a task's syscall registers are (script(): _mark_probe)
        self._noargs = 0  # opens and calls whose registers did not hold them: not reported
        self._marks: set[int] = set()  # CPUs whose records bpftrace has printed (flush())
        self._marked = threading.Condition()
        env = {**os.environ, "BPFTRACE_STRLEN": str(STRLEN),
               "BPFTRACE_MAP_KEYS_MAX": "65536",
               # 4 MiB of event buffer per CPU (default 256 KiB): a burst of new paths is
               # not lost while our reader catches up
               "BPFTRACE_PERF_RB_PAGES": "1024"}
        if kernel.BTF.exists():
            # The kernel's types only: left to itself bpftrace 0.17 also loads the BTF of every
            # module and searches them all as it resolves types (68 modules in the CI VM, where
            # this took its start from 43 s to 18 s under qemu TCG; main's program: 5 s).
            # Our program reads no module's type.
            env["BPFTRACE_BTF"] = str(kernel.BTF)
        # Paths of the BPF program come from us only (checked in script()).
        log.debug("start: %s -e PROGRAM", commands.shown([bpftrace]))
        # If autosandbox is killed (SIGKILL too), bpftrace ends with it, even while it starts:
        # BPF programs left attached would tax every open on the machine (procs.py).
        program = script(root_pids, gate_prefix, program_pids)
        self._proc = procs.spawn_reader([bpftrace, "-e", program], env, "latin-1",
                                        _raise_memlock)
        runstate.record_process(self._proc.pid)
        self._stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, name="bpftrace", daemon=True),
                         threading.Thread(target=self._read_err, name="bpftrace-err",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + ready_timeout
        while not self._wait_ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                err = " ".join(line.strip() for line in self._stderr
                               if "RLIMIT_MEMLOCK" not in line)[:300]
                why = err or f"its program was not running after {ready_timeout:.0f} s"
                raise OSError(f"bpftrace did not start: {why}")
        self._calibrate(deadline)

    def _calibrate(self, deadline: float) -> None:
        """Before anything is traced: the exit probes read an open's arguments from where
        this call finds the kernel keeps a task's registers; not found, no open is read."""
        with contextlib.suppress(OSError):
            os.getpgid(CALIBRATE_PID)
        while not self._calibrated.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                break
        if not self._regs:
            self.close()
            raise OSError("bpftrace could not find the syscall arguments in the kernel's "
                          "saved registers (x86-64 pt_regs)")

    def _wait_ready(self) -> bool:
        try:
            return self._ready.wait(0.1)
        except BaseException:  # interrupted while bpftrace starts: it must not outlive that
            self._proc.kill()
            self._proc.wait()
            self._closed = True
            raise

    def _read(self) -> None:
        assert self._proc.stdout is not None
        seen: set[tuple[int, str, str | None, tuple[int, int] | None, bool, bool]] = set()
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith("OPEN "):
                self._open(line, seen)
            elif not self._other(line):
                self._lost(line)

    def _open(self, line: str,
              seen: set[tuple[int, str, str | None, tuple[int, int] | None, bool, bool]]) -> None:
        rec = self._parse(line)
        if rec is None:
            return
        # Relative opens come every time: keep one per process and kind, so a long session's
        # memory does not grow with its requests (and forget past SEEN_MAX). (Absolute paths
        # come once each already: the BPF program remembers them.)
        if rec.raw_absolute and rec.root is None:
            self._take(rec)
            return
        key = (rec.tid, rec.path, rec.dir_path, rec.root, bool(rec.flags & _WRITE_BITS),
               rec.ret >= 0)
        if key not in seen:
            if len(seen) >= SEEN_MAX:
                seen.clear()
            seen.add(key)
            self._take(rec)

    def _other(self, line: str) -> bool:
        """A line of the program other than an open; False if it is none of ours."""
        if line.startswith(("CALL ", "USED ")):
            rec = kernel.parse(line)
            if rec is not None:
                self._take(rec)
        elif line.startswith("@capn["):
            count = kernel_sets.parse_count(line)
            if count is not None:
                cls, cap, n = count
                self.granted.setdefault(cls, {})[cap_name(cap)] = n
        elif line.startswith("READY"):
            self._ready.set()
        elif line.startswith("REGS "):
            self._regs = int(line.split()[1]) if line.split()[1].isdigit() else 0
            self._calibrated.set()
        elif line.startswith("NOARGS "):
            self._noargs += 1
        elif line.startswith("MARK "):
            m = _MARK_LINE.match(line)
            if m is not None:
                with self._marked:
                    self._marks.add(int(m.group(1)))
                    self._marked.notify_all()
        else:
            return False
        return True

    def _take(self, rec: Record) -> None:
        if self.on_record is None:
            self.records.append(rec)
        elif not self.on_record(rec):
            if len(self._pending) >= PENDING_MAX:
                self._pending.popleft()
                self.overflow += 1
            self._pending.append(rec)

    def deliver(self) -> None:
        """Offer the held records once more, after strace reported every fork (call after
        close() and after the recorders' streams ended); the rest is counted in `warnings`."""
        if self.on_record is None:
            return
        while self._pending:
            if not self.on_record(self._pending.popleft()):
                self.foreign += 1
        if self.overflow or self.foreign:
            # Only the programs strace runs are reported (script()): a record no recorder
            # takes is a call the profile misses, not a stranger's.
            self.unattributed += self.overflow + self.foreign
            self.warnings.append(f"{self.overflow + self.foreign} opens and calls reported by "
                                 "bpftrace were not placed in any process's trace: left out")
            self.overflow = self.foreign = 0

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
        # (device, inode): of the root for an absolute path (none: strace's root), else of
        # the directory a relative path started at
        tid, dirfd, flags, ret, dev, ino = (int(m.group(i)) for i in range(1, 7))
        raw = m.group(7)
        path = decode(raw)
        if path is not None and len(os.fsencode(path)) >= STRLEN - 1:
            # Cut at STRLEN: what is left is not the file, and its parent is not what was
            # opened (treating it as created made "/" writable). Left out: validation finds
            # what is missing. (The fd's link is no way out: by now it may be another file's.)
            self._cut += 1
            return None
        dir_path = None
        start_dir = None
        if path is not None and not path.startswith("/"):
            # Where a relative path started, read at once: the process may chdir or exit. Only
            # the directory the kernel named counts (by its inode: the process may have moved
            # on by now). A dirfd we cannot read so is refused; a cwd is left to the recorder.
            start_dir = (dev, ino)
            link = f"/proc/{tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{tid}/fd/{dirfd}"
            with contextlib.suppress(OSError):
                dir_path = os.readlink(link)
            if dir_path is not None and not (dir_path.startswith("/") and ino
                                             and is_inode(dir_path, dev, ino)):
                dir_path = None
            if dir_path is None and dirfd != AT_FDCWD:
                path = None
        if path is None:
            self._unreadable += 1
            return None
        root = (dev, ino) if path.startswith("/") and ino else None
        return OpenRecord(tid, flags & 0xFFFFFFFF, ret, path, dir_path, root, start_dir)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until bpftrace has printed every record the kernel holds for it (call once the
        traced processes ended): stopped before, it would drop what it had not read yet (seen
        on a busy machine: 300 of 956 files created, gone without a "lost" warning). Records
        are in order per CPU, so a marker call made on each CPU, once printed, says that CPU's
        earlier records were. False if that did not happen within `timeout` s."""
        old = os.sched_getaffinity(0)
        with self._marked:
            self._marks.clear()
        try:
            for cpu in sorted(old):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, {cpu})  # this thread only
                    os.getpgid(MARK_PID)
        finally:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, old)
        with self._marked:
            done = self._marked.wait_for(lambda: old <= self._marks or self._proc.poll() is
                                         not None, timeout)
        # CPUs we may not run on (a cpuset) cannot be marked: their records get a moment
        online = os.cpu_count() or len(old)
        if done and len(old) < online:
            time.sleep(0.5)
        return done and old <= self._marks

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        began = time.monotonic()
        log.debug("stopping bpftrace (pid %d)", self._proc.pid)
        if self._proc.poll() is None and not interrupts.interrupted() and not self.flush():
            self.warnings.append("bpftrace did not catch up with the kernel's records within "
                                 "10 s: opens and calls may be missing")
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)  # bpftrace detaches and runs END
            try:  # interrupted: within the 5 s we promise (SIGKILL detaches it all the same)
                self._proc.wait(2 if interrupts.interrupted() else 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        for t in self._threads:
            t.join(5)
        log.debug("  bpftrace stopped in %.2f s (exit %s)", time.monotonic() - began,
                  self._proc.returncode)
        if self.lost:
            self.warnings.append(f"bpftrace lost {self.lost} open events: paths may be missing")
        if self._cut:
            self.warnings.append(f"{self._cut} opened paths were longer than {STRLEN - 2} bytes"
                                 " (more than bpftrace reports whole): left out")
        if self._noargs:
            self.warnings.append(f"{self._noargs} opens and calls whose arguments were not in "
                                 "the registers found at the start: left out")
        if self._unreadable:
            self.warnings.append(f"{self._unreadable} opens had a path bpftrace could not "
                                 "report exactly (ambiguous, or relative to a dirfd that "
                                 "was closed or changed before it was read): left out")

    def __enter__(self) -> OpenTracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise_memlock() -> None:
    """(in the child, before exec) BPF maps count against RLIMIT_MEMLOCK on older kernels."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_MEMLOCK,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
