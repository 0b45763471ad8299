"""Hot calls seen in the kernel by the bpftrace program of opens.py, so that strace need not stop
on them: accept/accept4, setsockopt, fcntl, mmap/mprotect/pkey_mprotect.

A server that accepts a connection per request paid one ptrace stop per request for accept4
alone (it left nginx a third of its rate). Here the BPF program reads the arguments the
recorder decides on and prints a call once per distinct decisive arguments and result, per
class of line (a map in the kernel is the de-duplication; classes: kernel_sets.py): a peer's
address, not its ephemeral port; a socket option by level and name (every call for the options
that show a capability); fcntl by command (every F_SETLEASE); a mapping by its protection.
Records are translated here into the strace form of the call (strace_parser.Syscall) and given
to the same Recorder: recorder.py stays the one home of what a call means.

Left to strace: socket() (bind/connect, still strace's, read the socket's type from it: a late
kernel record would leave their endpoints without a protocol), clone/clone3/fork (strace -f
stops on every new task anyway, and the recorder learns of children from them).
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autosandbox.linux.tracefs import tracefs_root
from autosandbox.trace.recorder import Recorder
from autosandbox.trace.strace_parser import Syscall
from autosandbox.trace.syscall_regs import arg, load_or_leave

# (level, option) -> strace's name: the options a capability rule or the recorder's buffer
# bookkeeping reads (capabilities.CAP_RULES). Every call of these is printed; others once per
# (level, option, result).
SOCKOPTS: dict[tuple[int, int], str] = {
    (1, 1): "SO_DEBUG", (1, 7): "SO_SNDBUF", (1, 8): "SO_RCVBUF", (1, 25): "SO_BINDTODEVICE",
    (1, 32): "SO_SNDBUFFORCE", (1, 33): "SO_RCVBUFFORCE", (1, 36): "SO_MARK",
    (1, 62): "SO_BINDTOIFINDEX", (1, 70): "SO_BUSY_POLL_BUDGET", (0, 19): "IP_TRANSPARENT",
    (41, 75): "IPV6_TRANSPARENT",
}
# Options that prove a need only on a socket then bound or connected (CapRule.on_use): the
# kernel says when that happens (USED), whatever order the records and strace's lines arrive in.
_BUFFER_OPTS = {"SO_SNDBUF", "SO_RCVBUF"}
_LEVELS = {0: "SOL_IP", 1: "SOL_SOCKET", 6: "SOL_TCP", 17: "SOL_UDP", 41: "SOL_IPV6"}
F_SETLEASE = 1024
_LEASES = {0: "F_RDLCK", 1: "F_WRLCK", 2: "F_UNLCK"}
_PROTS = ((1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC"), (8, "PROT_SEM"))
# connect() results that still are attempts (recorder._ATTEMPT_ERRNOS), as -errno
_ATTEMPTS = (0, -errno.EINPROGRESS, -errno.EAGAIN, -errno.EALREADY, -errno.ECONNREFUSED,
             -errno.ETIMEDOUT, -errno.ENETUNREACH, -errno.EHOSTUNREACH, -errno.ECONNRESET)
ACCEPTS = ("accept", "accept4")
MEMORY = ("mmap", "mprotect", "pkey_mprotect")
_RECORD = re.compile(r"^CALL (\w+) (\d+) (-?\d+) (-?\d+(?: -?\d+)*)$")
_USED = re.compile(r"^USED (\w+) (\d+) (-?\d+) (\d+)$")
# The inode of the socket behind $fd, read in the kernel as the call returns (BTF): read later
# from /proc, a socket already closed would be missed.
_INODE = "$file = *(curtask->files->fdt->fd + $fd); $ino = $file->f_inode->i_ino;"
USED_MAX = 4096  # sockets the kernel saw used before their option's record arrived
BTF = Path("/sys/kernel/btf/vmlinux")


@dataclass(frozen=True, slots=True)
class CallRecord:
    tid: int
    name: str
    ret: int  # 0 or -errno (the returned fd or address is not decisive)
    args: tuple[int, ...]
    sock: str | None = None  # "socket:[N]" of the fd argument, read in the kernel
    used: bool = False  # not a call: the socket of a privileged option bound or connected
    listener: tuple[int, int] | None = None  # an accepting socket's family and type


def _have(call: str) -> bool:
    root = tracefs_root()
    return root is not None and (root / f"events/syscalls/sys_exit_{call}").is_dir()


def covered() -> frozenset[str]:
    """The calls the kernel program records here (strace need not stop on them). Without the
    kernel's type information (BTF) a socket's inode cannot be read in the kernel: strace
    keeps them all."""
    if not BTF.exists():
        return frozenset()
    return frozenset(c for c in (*ACCEPTS, "setsockopt", "fcntl", *MEMORY) if _have(c))


def _errors_or_zero(expr: str) -> str:
    return f"({expr} < 0 && {expr} > -4096 ? {expr} : 0)"


# Each `args->field` is read once per probe, into a variable: bpftrace 0.17 pays for every
# `args->` it compiles with ~21 readings of tracefs's list of all kernel events (2,300 lines,
# listed by the kernel in quadratic time). With one read per use the program cost 1,153
# readings (1.3 s of bpftrace's start on a 2-core host); this way 744 (1.1 s).
_RET = f"$r = args->ret; $ret = {_errors_or_zero('$r')};"


def script() -> str:
    """The probes added to opens.script(): only for threads of the program (@p). Exit probes
    only, their arguments from the saved registers (syscall_regs.py)."""
    calls = covered()
    out: list[str] = []
    for c in ACCEPTS:
        if c not in calls:
            continue
        out.append(
            f"tracepoint:syscalls:sys_exit_{c} /@p[tid]/ {{\n"
            f"  {load_or_leave(c)}\n"
            f"  $fd = (int64)(int32){arg(0)}; $sa = {arg(1)}; {_RET}\n"
            "  $fam = (uint64)0; $port = (uint64)0; $a = (uint64)0; $b = (uint64)0;\n"
            "  if ($ret == 0 && $sa != 0) {\n"
            "    $fam = (uint64)*uptr((uint16*)$sa);\n"
            "    if ($fam == 2 || $fam == 10) { $port = (uint64)*uptr((uint16*)($sa + 2)); }\n"
            "    if ($fam == 2) { $a = (uint64)*uptr((uint32*)($sa + 4)); }\n"
            "    if ($fam == 10) { $a = *uptr((uint64*)($sa + 8));"
            " $b = *uptr((uint64*)($sa + 16)); }\n"
            "  }\n"
            # the peer's address, not its port: one record per listener and client address
            "  if (!@acc[pid, $fd, $ret, $fam, $a, $b]) {\n"
            "    @acc[pid, $fd, $ret, $fam, $a, $b] = 1;\n"
            f"    {_INODE}\n"
            # the listener's family and type: strace's line of its socket() may come later
            "    $sk = (struct socket *)$file->private_data;\n"
            f'    printf("CALL {c} %d %d %d %d %d %lld %lld %lu %d %d\\n", tid, $ret, $fd, $fam,'
            " $port, $a, $b, $ino, $sk->sk->__sk_common.skc_family, $sk->type);\n"
            "  }\n}\n")
    if "setsockopt" in calls:
        wanted = " || ".join(f"($lv == {lv} && $op == {op})" for lv, op in SOCKOPTS)
        on_use = " || ".join(f"($lv == {lv} && $op == {op})" for (lv, op), name in
                             SOCKOPTS.items() if name not in _BUFFER_OPTS)
        out.append(
            "tracepoint:syscalls:sys_exit_setsockopt /@p[tid]/ {\n"
            f"  {load_or_leave('setsockopt')}\n"
            f"  $fd = (int64)(int32){arg(0)}; $lv = (int64)(int32){arg(1)};"
            f" $op = (int64)(int32){arg(2)}; {_RET}\n"
            f"  if ({wanted}) {{\n"
            # the value as the call left it in the program's memory (the kernel read it at
            # entry: a program racing itself could show another here, as it could to an
            # entry probe before the kernel's read)
            f"    $val = (int32){arg(4)} >= 4 ? (int64)*uptr((int32*){arg(3)}) : 0;\n"
            f"    {_INODE}\n"
            '    printf("CALL setsockopt %d %d %d %d %d %d %lu\\n", tid, $ret, $fd, $lv, $op,'
            " $val, $ino);\n"
            f"    if ($ret == 0 && ({on_use})) {{ @sou[pid, $fd] = 1; }}\n"
            "  } else if (!@sos[@p[tid], $lv, $op, $ret]) {\n"
            "    @sos[@p[tid], $lv, $op, $ret] = 1;\n"
            '    printf("CALL setsockopt %d %d -1 %d %d 0 0\\n", tid, $ret, $lv, $op);\n'
            "  }\n}\n")
        for c, ok in (("bind", "$r == 0"),
                      ("connect", " || ".join(f"$r == {e}" for e in _ATTEMPTS))):
            if not _have(c):
                continue
            out.append(
                f"tracepoint:syscalls:sys_exit_{c} /@p[tid]/ {{\n"
                f"  {load_or_leave(c)}\n"
                f"  $r = args->ret; $fd = (int64)(int32){arg(0)};\n"
                f"  if (@sou[pid, $fd] && ({ok})) {{ {_INODE}"
                f' printf("USED {c} %d %d %lu\\n", tid, $fd, $ino);'
                " delete(@sou[pid, $fd]); }\n}\n")
    if "fcntl" in calls:
        out.append(
            "tracepoint:syscalls:sys_exit_fcntl /@p[tid]/ {\n"
            f"  {load_or_leave('fcntl')}\n"
            f"  $cmd = (int64)(int32){arg(1)}; {_RET}\n"
            f"  if ($cmd == {F_SETLEASE} || !@fcs[@p[tid], $cmd, $ret]) {{\n"
            "    @fcs[@p[tid], $cmd, $ret] = 1;\n"
            '    printf("CALL fcntl %d %d %d %d %d\\n", tid, $ret, (int64)(int32)'
            f"{arg(0)}, $cmd, (int64){arg(2)});\n"
            "  }\n}\n")
    for i, c in enumerate(MEMORY):
        if c not in calls:
            continue
        out.append(
            f"tracepoint:syscalls:sys_exit_{c} /@p[tid]/ {{\n"
            f"  {load_or_leave(c)}\n"
            f"  $prot = {arg(2)}; {_RET}\n"
            f"  if (!@mem[@p[tid], {i}, $prot, $ret]) {{\n"
            f"    @mem[@p[tid], {i}, $prot, $ret] = 1;\n"
            f'    printf("CALL {c} %d %d %d\\n", tid, $ret, $prot);\n'
            "  }\n}\n")
    return "".join(out)


MAPS = ("@acc", "@sou", "@sos", "@fcs", "@mem")


def end_clears() -> str:
    calls = covered()
    used = {"@acc"} if calls & set(ACCEPTS) else set()
    if "setsockopt" in calls:
        used |= {"@sou", "@sos"}
    if "fcntl" in calls:
        used.add("@fcs")
    if calls & set(MEMORY):
        used.add("@mem")
    return " ".join(f"clear({m});" for m in MAPS if m in used)


def _socket(ino: int) -> str | None:
    return f"socket:[{ino}]" if ino > 0 else None


def parse(line: str) -> CallRecord | None:
    """A CALL or USED line of the BPF program."""
    m = _USED.match(line)
    if m is not None:
        return CallRecord(int(m.group(2)), m.group(1), 0, (int(m.group(3)),),
                          _socket(int(m.group(4))), used=True)
    m = _RECORD.match(line)
    if m is None:
        return None
    name, tid, ret = m.group(1), int(m.group(2)), int(m.group(3))
    nums = [int(a) for a in m.group(4).split()]
    if name in ACCEPTS and len(nums) == 8:  # fd, family, port, address (2), then the listener
        ino = nums[5]
        return CallRecord(tid, name, ret, tuple(nums[:5]), _socket(ino),
                          listener=(nums[6], nums[7]) if ino else None)
    if name == "setsockopt" and len(nums) == 5:
        return CallRecord(tid, name, ret, tuple(nums[:4]), _socket(nums[4]))
    return CallRecord(tid, name, ret, tuple(nums))


def _fd(rec: CallRecord) -> str:
    return f"{rec.args[0]}<{rec.sock}>" if rec.sock else str(rec.args[0])


def _sockaddr(fam: int, port: int, a: int, b: int) -> str:
    port = struct.unpack("<H", struct.pack(">H", port & 0xFFFF))[0]  # network byte order
    if fam == socket.AF_INET:
        addr = socket.inet_ntoa(struct.pack("<I", a & 0xFFFFFFFF))
        return f'{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{addr}")}}'
    if fam == socket.AF_INET6:
        addr = socket.inet_ntop(socket.AF_INET6, struct.pack("<qq", a, b))
        return (f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), "
                f'inet_pton(AF_INET6, "{addr}", &sin6_addr), sin6_scope_id=0}}')
    return f"{{sa_family={_family(fam)}}}"


def _prot(prot: int) -> str:
    names = [n for bit, n in _PROTS if prot & bit]
    rest = prot & ~0xF
    return "|".join([*names, *([hex(rest)] if rest else [])]) or "PROT_NONE"


def _family(fam: int) -> str:
    with contextlib.suppress(ValueError):
        return socket.AddressFamily(fam).name
    return str(fam)


def _listener(rec: CallRecord) -> tuple[str, str] | None:
    """strace's names of an accepting socket's family and type."""
    if rec.listener is None:
        return None
    fam, stype = rec.listener
    with contextlib.suppress(ValueError):
        return _family(fam), socket.SocketKind(stype).name
    return None


def to_syscall(rec: CallRecord) -> Syscall:
    """The record as strace would have printed the call (the parts the recorder reads)."""
    err = errno.errorcode.get(-rec.ret, f"E{-rec.ret}") if rec.ret < 0 else None
    ret = "-1" if err else "0"
    a = rec.args
    if rec.used:
        return Syscall(rec.tid, rec.name, [_fd(rec)], "0", None, None)
    if rec.name in ACCEPTS:
        addr = "NULL" if a[1] == 0 else _sockaddr(*a[1:5])
        return Syscall(rec.tid, rec.name, [_fd(rec), addr, "[128]"], ret, None, err)
    if rec.name == "setsockopt":
        level, opt, val = a[1], a[2], a[3]
        args = [_fd(rec), _LEVELS.get(level, str(level)),
                SOCKOPTS.get((level, opt), str(opt)), f"[{val}]", "4"]
        return Syscall(rec.tid, rec.name, args, ret, None, err)
    if rec.name == "fcntl":
        cmd = "F_SETLEASE" if a[1] == F_SETLEASE else str(a[1])
        arg = _LEASES.get(a[2], str(a[2])) if a[1] == F_SETLEASE else str(a[2])
        return Syscall(rec.tid, rec.name, [str(a[0]), cmd, arg], ret, None, err)
    # mmap(addr, len, prot, ...), mprotect/pkey_mprotect(addr, len, prot, ...)
    return Syscall(rec.tid, rec.name, ["NULL", "0", _prot(a[0])], ret, None, err)


class CallSink:
    """Gives each record to the recorder following its thread (one per Exec line)."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self.recorders = recorders
        self._used: dict[str, None] = {}  # sockets used before their option arrived

    def take(self, rec: CallRecord) -> bool:
        sc = to_syscall(rec)
        for r in self.recorders:
            if rec.used:
                if r.kernel_socket_used(sc):
                    if rec.sock is not None:
                        if len(self._used) >= USED_MAX:
                            del self._used[next(iter(self._used))]
                        self._used[rec.sock] = None
                    return True
            elif r.kernel_call(sc, _listener(rec)):
                if rec.name == "setsockopt" and rec.sock in self._used:
                    # the kernel saw it bound or connected before this record came
                    r.kernel_socket_used(Syscall(rec.tid, "connect", [_fd(rec)], "0", None,
                                                 None))
                return True
        return False
