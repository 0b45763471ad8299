"""Turns parsed strace events into a Profile: resolved paths with access kinds, sockets,
capabilities inferred from syscalls (capabilities.CAP_RULES) and behaviour flags."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from autosandbox.linux import dac
from autosandbox.linux.devices import PSEUDO_DEVICE_PREFIXES, PSEUDO_DEVICES
from autosandbox.linux.files import is_inode
from autosandbox.linux.syscalls import NOT_CALLS
from autosandbox.profile import GROUP_LIMIT, WRITE_KINDS, Endpoint, Fact, Profile
from autosandbox.trace.capabilities import RULES_BY_SYSCALL
from autosandbox.trace.strace_parser import (
    Event,
    ProcessEnd,
    Signal,
    StraceParser,
    Syscall,
    fd_path,
    string_arg,
    unescape,
)

# name -> (access kind, index of the dirfd argument or None, index of the path argument)
PATH_CALLS: dict[str, tuple[str, int | None, int]] = {
    "open": ("?open", None, 0), "creat": ("?open", None, 0), "openat": ("?open", 0, 1),
    "openat2": ("?open", 0, 1),
    "execve": ("exec", None, 0), "execveat": ("exec", 0, 1),
    "stat": ("stat", None, 0), "lstat": ("stat", None, 0), "newfstatat": ("stat", 0, 1),
    "fstatat64": ("stat", 0, 1), "statx": ("stat", 0, 1), "access": ("stat", None, 0),
    "faccessat": ("stat", 0, 1), "faccessat2": ("stat", 0, 1), "readlink": ("stat", None, 0),
    "readlinkat": ("stat", 0, 1), "getxattr": ("stat", None, 0), "lgetxattr": ("stat", None, 0),
    "listxattr": ("stat", None, 0), "llistxattr": ("stat", None, 0), "statfs": ("stat", None, 0),
    "inotify_add_watch": ("read", None, 1),
    "mkdir": ("mkdir", None, 0), "mkdirat": ("mkdir", 0, 1),
    "unlink": ("delete", None, 0), "unlinkat": ("delete", 0, 1), "rmdir": ("delete", None, 0),
    "chmod": ("chmod", None, 0), "fchmodat": ("chmod", 0, 1), "fchmodat2": ("chmod", 0, 1),
    "chown": ("chown", None, 0), "lchown": ("chown", None, 0), "fchownat": ("chown", 0, 1),
    "truncate": ("write", None, 0), "utime": ("setattr", None, 0),
    "utimes": ("setattr", None, 0), "utimensat": ("setattr", 0, 1),
    "futimesat": ("setattr", 0, 1), "setxattr": ("setattr", None, 0),
    "lsetxattr": ("setattr", None, 0), "removexattr": ("setattr", None, 0),
    "lremovexattr": ("setattr", None, 0), "mknod": ("create", None, 0),
    "mknodat": ("create", 0, 1), "chdir": ("stat", None, 0), "chroot": ("stat", None, 0),
}
# Calls on an open fd: (kind, index of the fd argument)
FD_CALLS: dict[str, tuple[str, int]] = {
    "fchmod": ("chmod", 0), "fchown": ("chown", 0), "fsetxattr": ("setattr", 0),
    "fchdir": ("stat", 0),
}
# Two-path calls: (index of old dirfd or None, old path, index of new dirfd or None, new path)
TWO_PATH_CALLS: dict[str, tuple[str, str, int | None, int, int | None, int]] = {
    "rename": ("rename", "rename", None, 0, None, 1),
    "renameat": ("rename", "rename", 0, 1, 2, 3),
    "renameat2": ("rename", "rename", 0, 1, 2, 3),
    "link": ("stat", "create", None, 0, None, 1),
    "linkat": ("stat", "create", 0, 1, 2, 3),
}
SYMLINK_CALLS: dict[str, tuple[int | None, int]] = {"symlink": (None, 1), "symlinkat": (1, 2)}
# Calls that act on a symlink itself, not on what it points to: their last component is kept
# as written (the directories above it are still resolved, as the kernel resolves them).
NOFOLLOW_CALLS = frozenset({
    "lstat", "lchown", "lsetxattr", "lremovexattr", "lgetxattr", "llistxattr", "readlink",
    "readlinkat", "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "mknod", "mknodat",
    "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
})
# ... or do so when given AT_SYMLINK_NOFOLLOW (linkat's old path only with AT_SYMLINK_FOLLOW).
AT_NOFOLLOW_CALLS = frozenset({"newfstatat", "fstatat64", "statx", "fchownat", "utimensat",
                               "fchmodat2", "faccessat2", "execveat", "name_to_handle_at"})

# Behaviour flags set by the mere use of a syscall (arguments refine some, below).
FLAG_CALLS: dict[str, str] = {
    "mount": "mount", "umount2": "mount", "pivot_root": "mount", "fsopen": "mount",
    "fsmount": "mount", "move_mount": "mount", "open_tree": "mount",
    "init_module": "module_load", "finit_module": "module_load", "delete_module": "module_load",
    "settimeofday": "clock_set", "clock_settime": "clock_set", "adjtimex": "clock_set",
    "clock_adjtime": "clock_set", "sethostname": "hostname_set", "setdomainname": "hostname_set",
    "add_key": "keyring", "request_key": "keyring", "keyctl": "keyring", "syslog": "kernel_log",
    "shmget": "sysv_ipc", "semget": "sysv_ipc", "msgget": "sysv_ipc", "ptrace": "ptrace",
    "process_vm_readv": "ptrace", "process_vm_writev": "ptrace", "chroot": "chroot",
    "bpf": "bpf", "perf_event_open": "perf", "iopl": "raw_io", "ioperm": "raw_io",
    "reboot": "reboot", "kexec_load": "reboot", "kexec_file_load": "reboot",
}
NAMESPACE_FLAGS = ("CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER", "CLONE_NEWPID",
                   "CLONE_NEWNET", "CLONE_NEWCGROUP", "CLONE_NEWTIME")
SETID_CALLS: dict[str, tuple[str, tuple[int, ...]]] = {
    "setuid": ("uid", (0,)), "setreuid": ("uid", (0, 1)), "setresuid": ("uid", (0, 1, 2)),
    "setfsuid": ("uid", (0,)), "setgid": ("gid", (0,)), "setregid": ("gid", (0, 1)),
    "setresgid": ("gid", (0, 1, 2)), "setfsgid": ("gid", (0,)),
}

_V = TypeVar("_V")
_D = TypeVar("_D")
_FAMILY = re.compile(r"sa_family=(\w+)")
_PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
_ADDR4 = re.compile(r'inet_addr\("([^"]+)"\)')
_ADDR6 = re.compile(r'inet_pton\(AF_INET6, "([^"]+)"')
_SUN_PATH = re.compile(r'sun_path=(@?)("(?:[^"\\]|\\.)*")')
_SOCKET_INODE = re.compile(r"socket:\[(\d+)\]")
_PROC_PID = re.compile(r"/proc/(\d+)(?:/|$)")
# What /proc shows of a process only to who may ptrace it (PTRACE_MODE_READ: proc_pid_readlink,
# mm_access): another uid's needs CAP_SYS_PTRACE. exim4's init script reads /proc/PID/exe of
# its Debian-exim daemon as root (start-stop-daemon --exec): without it, the stop found nothing.
_PROC_TRACED = re.compile(r"/proc/(\d+)/(?:exe|cwd|root|fd|fdinfo|map_files|environ|auxv|mem|"
                          r"maps|smaps|smaps_rollup|numa_maps|pagemap|stack|syscall|io|"
                          r"personality)(?:/|$)")
_SOCK_PROTO = {"SOCK_STREAM": "tcp", "SOCK_DGRAM": "udp", "SOCK_RAW": "raw",
               "SOCK_SEQPACKET": "seqpacket"}
# Lines of processes not (yet) followed: strace may print a child's first calls before the
# parent's clone() returns. Held until a followed process names the child, at most this many.
HELD_MAX = 4096
# Bounds on per-socket and per-endpoint state: a server accepting a million connections must
# not grow the learner.
SOCKETS_MAX = 65536
ENDPOINTS_MAX = 4096
WARNINGS_MAX = 10  # distinct examples per kind of path warning
# What a process may say in its own user namespace proves no capability of the host's.
USERNS_FLAG = "CLONE_NEWUSER"
# Failed connects that are still attempts the service needs (nonblocking or refused).
_ATTEMPT_ERRNOS = frozenset({"EINPROGRESS", "EAGAIN", "EALREADY", "ECONNREFUSED", "ETIMEDOUT",
                             "ENETUNREACH", "EHOSTUNREACH", "ECONNRESET"})


@dataclass
class _Socket:
    family: str
    proto: str


_CLONE_FS = re.compile(r"\bCLONE_FS\b")


class _PerFs(Generic[_V]):
    """A value of each task's fs struct (cwd, root): tasks cloned with CLONE_FS (a process's
    threads) share one, so a chdir or chroot in one of them moves them all. `keys` maps a task
    to the task whose fs it shares."""

    def __init__(self, keys: dict[int, int]) -> None:
        self._keys = keys
        self._values: dict[int, _V] = {}

    def _key(self, pid: int) -> int:
        return self._keys.get(pid, pid)

    def get(self, pid: int, default: _D) -> _V | _D:
        return self._values.get(self._key(pid), default)

    def __getitem__(self, pid: int) -> _V:
        return self._values[self._key(pid)]

    def __setitem__(self, pid: int, value: _V) -> None:
        self._values[self._key(pid)] = value

    def __delitem__(self, pid: int) -> None:
        del self._values[self._key(pid)]

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, int) and self._key(pid) in self._values

    def pop(self, pid: int, default: _D) -> _V | _D:
        return self._values.pop(self._key(pid), default)

    def setdefault(self, pid: int, value: _V) -> _V:
        return self._values.setdefault(self._key(pid), value)


class Recorder:
    """Feeds on events; owns per-process state (cwd, ids) and the socket inode table.

    Only the processes it follows count: `roots` (the announced pid of a unit's Exec line, see
    gate.py) or, with `first_is_root`, the first pid strace reports (a command's FIFO only
    root can open), and the children strace saw them create. Lines of any other pid are held
    (bounded) until a followed process's clone() names it, and dropped with a warning at the
    end: lines someone else wrote into the FIFO never enter the profile."""

    def __init__(self, profile: Profile, cwd: str, uid: int = 0, gid: int = 0,
                 roots: Iterable[int] = (), first_is_root: bool = True) -> None:
        self.profile = profile
        self.root_cwd = cwd
        self.start_uid = uid
        self.start_gid = gid
        self.fs_of: dict[int, int] = {}  # task -> the task whose fs (cwd, root) it shares
        self.cwd: _PerFs[str] = _PerFs(self.fs_of)
        self.uid: dict[int, int] = {}
        self.gid: dict[int, int] = {}
        self.groups: dict[int, frozenset[int]] = {}
        self.pids: set[int] = set()
        self.userns: set[int] = set()  # pids living in a user namespace of their own
        # pids whose "/" is not ours -> that root on our side ("" if unknown). Their absolute
        # names are taken below it; what -y prints (fds, the cwd) is already on our side.
        self.chrooted: _PerFs[str] = _PerFs(self.fs_of)
        self.chroot_dirs: list[str] = []  # every chroot directory seen (the kernel's opens)
        self.fs_ids: set[int] = set()  # pids that set their fsuid/fsgid apart
        self.split_ids: set[int] = set()  # pids whose real, effective, saved uids may differ
        # capabilities a socket option shows once the socket is used (capabilities.CapRule)
        self.socket_caps: dict[str, list[tuple[str, str]]] = {}
        self.socket_buffers: set[tuple[str, str]] = set()  # (inode, SO_SNDBUF/SO_RCVBUF) set
        self.sockets: dict[str, _Socket] = {}
        self.exit_codes: dict[int, int | None] = {}
        self.first_pid: int | None = None
        self.first_is_root = first_is_root
        # The stream's thread and the kernel-opens thread both record.
        self.lock = threading.RLock()
        self._held: dict[int, list[Event]] = {}
        self._held_n = 0
        self.dropped = 0  # lines of processes never followed
        self._path_notes: dict[str, list[str]] = {}
        self._path_note_n: dict[str, int] = {}
        self._realdir: dict[str, str] = {}
        self._realdir_at = time.monotonic()
        self.endpoint_overflow = 0
        for pid in roots:
            self.add_root(pid)

    def add_root(self, pid: int, uid: int | None = None, gid: int | None = None) -> None:
        """Follow `pid` from now on (a gate announcement checked by the caller), running as
        `uid`/`gid` when known."""
        with self.lock:
            if uid is not None:
                self.uid[pid] = uid
            if gid is not None:
                self.gid[pid] = gid
            self._track(pid)
            self._replay(pid)

    # -- events ----------------------------------------------------------------------------
    def handle(self, ev: Event) -> None:
        with self.lock:
            pid = ev.pid
            if pid not in self.pids:
                if self.first_is_root and self.first_pid is None:
                    self._track(pid)
                else:
                    self._hold(pid, ev)
                    return
            self._dispatch(ev)

    def _dispatch(self, ev: Event) -> None:
        if isinstance(ev, Syscall):
            self._syscall(ev)
        elif isinstance(ev, ProcessEnd):
            if ev.pid == self.first_pid or len(self.exit_codes) < ENDPOINTS_MAX:
                self.exit_codes[ev.pid] = ev.exit_code
            # ids die with the process; cwd stays for opens the kernel reported late
            self.uid.pop(ev.pid, None)
            self.gid.pop(ev.pid, None)
            self.groups.pop(ev.pid, None)
            if self.cwd.get(ev.pid, None) == self.root_cwd:
                del self.cwd[ev.pid]
            self.fs_of.pop(ev.pid, None)

    def _hold(self, pid: int, ev: Event) -> None:
        if isinstance(ev, Signal):
            return
        if self._held_n >= HELD_MAX:
            self.dropped += 1
            return
        self._held.setdefault(pid, []).append(ev)
        self._held_n += 1

    def _replay(self, pid: int) -> None:
        held = self._held.pop(pid, None)
        if held is None:
            return
        self._held_n -= len(held)
        for ev in held:  # a clone among them replays the grandchild's lines in turn
            self._dispatch(ev)

    def finish(self, parser: StraceParser) -> Profile:
        """Fold the parser's counters (every syscall seen, failures of undetailed calls) in."""
        with self.lock:
            p = self.profile
            for name, n in parser.counts.items():
                if name not in NOT_CALLS:
                    p.syscalls[name] = p.syscalls.get(name, 0) + n
            for name, errs in parser.failed.items():
                mine = p.failed_syscalls.setdefault(name, {})
                for e, n in errs.items():
                    mine[e] = mine.get(e, 0) + n
            if parser.unparsed:
                p.warnings.append(f"{parser.unparsed} strace lines could not be parsed")
            dropped = self.dropped + self._held_n
            if dropped:
                pids = sorted(self._held)[:5]
                p.warnings.append(
                    f"{dropped} trace lines of processes that were not followed were left out"
                    + (f" (pids {', '.join(map(str, pids))})" if pids else ""))
            self._held.clear()
            self._held_n = self.dropped = 0
            for kind, notes in self._path_notes.items():
                extra = self._path_note_n[kind] - len(notes)
                more = f" (and {extra} more)" if extra > 0 else ""
                p.warnings.append(f"{kind}: {'; '.join(notes)}{more}")
            self._path_notes.clear()
            if p.failed_overflow:
                p.warnings.append(f"{p.failed_overflow} failed accesses in directories with more "
                                  f"than {GROUP_LIMIT} of them were counted only")
                p.failed_overflow = 0
            if p.paths_overflow:
                p.warnings.append(f"{p.paths_overflow} accesses to further paths were counted "
                                  "only (too many distinct paths and directories)")
                p.paths_overflow = 0
            if self.endpoint_overflow:
                p.warnings.append(f"{self.endpoint_overflow} further peers/endpoints were not "
                                  f"recorded (more than {ENDPOINTS_MAX})")
            return p

    def _note(self, kind: str, text: str) -> None:
        notes = self._path_notes.setdefault(kind, [])
        self._path_note_n[kind] = self._path_note_n.get(kind, 0) + 1
        if len(notes) < WARNINGS_MAX and text not in notes:
            notes.append(text)

    def _track(self, pid: int) -> None:
        if pid not in self.pids:
            self.pids.add(pid)
            if self.first_pid is None:
                self.first_pid = pid
            self.cwd.setdefault(pid, self.root_cwd)
            self.uid.setdefault(pid, self.start_uid)
            self.gid.setdefault(pid, self.start_gid)

    def _syscall(self, sc: Syscall) -> None:
        name = sc.name
        p = self.profile
        if sc.errno is not None:
            errs = p.failed_syscalls.setdefault(name, {})
            errs[sc.errno] = errs.get(sc.errno, 0) + 1
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, sc)
        flag = FLAG_CALLS.get(name)
        if flag is not None:
            p.add_flag(flag, f"{name}()")
        rules = RULES_BY_SYSCALL.get(name)
        if name == "setsockopt" and len(sc.args) > 2 and sc.args[2] in ("SO_SNDBUF", "SO_RCVBUF"):
            m = _SOCKET_INODE.search(sc.args[0])
            if m is not None and len(self.socket_buffers) < SOCKETS_MAX:
                self.socket_buffers.add((m.group(1), sc.args[2]))
        if rules and sc.ok and sc.pid not in self.userns:
            for rule in rules:
                if not rule.matches(sc.args):
                    continue
                if rule.on_use:
                    self._socket_cap(sc, rule.cap, rule.reason)
                else:
                    p.add_cap(rule.cap, f"{rule.reason} ({name})")

    def _socket_cap(self, sc: Syscall, cap: str, reason: str) -> None:
        """A socket option proves a need only on a socket then bound or connected: one set
        and closed unused is a probe of what the kernel allows. SO_SNDBUFFORCE after
        SO_SNDBUF on the same socket (likewise RCV) is the best-effort growth of a buffer that
        already works (sd_notify's fd_inc_sndbuf): a wish, not a need."""
        m = _SOCKET_INODE.search(sc.args[0]) if sc.args else None
        option = sc.args[2] if len(sc.args) > 2 else ""
        if m is None or (m.group(1), option.removesuffix("FORCE")) in self.socket_buffers:
            return
        reason = f"{reason} ({sc.name} {option})"
        if len(self.socket_caps) >= SOCKETS_MAX:
            del self.socket_caps[next(iter(self.socket_caps))]
        self.socket_caps.setdefault(m.group(1), []).append((cap, reason))

    def _socket_used(self, sc: Syscall) -> None:
        m = _SOCKET_INODE.search(sc.args[0]) if sc.args else None
        for cap, reason in self.socket_caps.pop(m.group(1), []) if m else []:
            self._add_cap(sc, cap, f"{reason} on a socket then {sc.name}()")

    def _as_root(self, pid: int) -> bool:
        """Owner and mode bits are checked as for root: fsuid and fsgid 0, no supplementary
        groups (trace/dac.py); in a user namespace or a chroot of its own, it proves nothing."""
        return (self.uid.get(pid, self.start_uid) == 0 and self.gid.get(pid, self.start_gid) == 0
                and not self.groups.get(pid) and pid not in self.userns
                and pid not in self.chrooted and pid not in self.fs_ids)

    def _add_cap(self, sc: Syscall, cap: str, reason: str) -> None:
        """A capability shown by a successful call, unless the caller lives in a user
        namespace of its own (where it holds every capability, none of the host's)."""
        if sc.pid not in self.userns:
            self.profile.add_cap(cap, reason)

    # -- paths -----------------------------------------------------------------------------
    def _base(self, sc: Syscall, dirfd: int | None) -> str | None:
        if dirfd is None or dirfd >= len(sc.args):
            return self.cwd.get(sc.pid, self.root_cwd)
        tok = sc.args[dirfd]
        path = fd_path(tok)
        if tok.startswith("AT_FDCWD"):
            if path is not None:  # strace -y shows the cwd: the ground truth
                self.cwd[sc.pid] = path
                return path
            return self.cwd.get(sc.pid, self.root_cwd)
        return path

    def literal(self, sc: Syscall, dirfd: int | None, index: int) -> str | None:
        """The path argument made absolute on our side, as written (no `..` folded: a
        symlink before it decides where it leads)."""
        if index >= len(sc.args):
            return None
        tok = sc.args[index]
        if tok == "NULL":  # utimensat(fd, NULL, ...) acts on the fd itself
            return self._base(sc, dirfd) if dirfd is not None else None
        path = string_arg(tok)
        if path is None:
            return None
        if path.startswith("/"):
            return self._ours(sc.pid, path)
        base = self._base(sc, dirfd)
        if base is None:
            return None
        return os.path.join(base, path) if path else base

    def resolve(self, sc: Syscall, dirfd: int | None, index: int,
                follow: bool = True) -> str | None:
        """Where the kernel looked: symlinks and `..` resolved as the traced process sees
        them; the last component kept as written when the call does not follow it."""
        path = self.literal(sc, dirfd, index)
        if path is None:
            return None
        return self.kernel_path(sc.pid, path, follow)

    def _ours(self, pid: int, path: str) -> str:
        """An absolute name a process used, as a path on our side: below its chroot."""
        root = self.chrooted.get(pid, None)
        return path if not root or root == "/" else _below(root, path)

    def kernel_path(self, pid: int, path: str, follow: bool,
                    chrooted: bool | None = None) -> str:
        """`chrooted`: whether `pid` had a root of its own then (default: it has one now)."""
        if pid in self.chrooted if chrooted is None else chrooted:
            # Its absolute links lead below its root, not ours: `..` folded, links kept.
            if not self.chrooted.get(pid, "-"):
                self._note("paths of a chroot whose directory is not known are recorded as "
                           "named", path)
            return _normalize(path)
        seen = _as_seen_by(pid, path)
        head, _, tail = seen.rpartition("/")
        if tail in ("", ".", ".."):
            return os.path.realpath(seen)
        real = os.path.join(self._real_dir(head or "/"), tail)
        if follow and os.path.islink(real):
            real = os.path.realpath(real)
        return real

    def _real_dir(self, head: str) -> str:
        # Directories are resolved once a second at most: a busy server renames in the same
        # few directories (a link swapped within that second is read the old way).
        now = time.monotonic()
        if now - self._realdir_at > 1.0 or len(self._realdir) > 4096:
            self._realdir.clear()
            self._realdir_at = now
        real = self._realdir.get(head)
        if real is None:
            real = self._realdir[head] = os.path.realpath(head)
        return real

    def _follows(self, sc: Syscall, at_flags_index: int | None) -> bool:
        name = sc.name
        if name in NOFOLLOW_CALLS:
            return False
        if name in AT_NOFOLLOW_CALLS and at_flags_index is not None:
            return not (at_flags_index < len(sc.args)
                        and "AT_SYMLINK_NOFOLLOW" in sc.args[at_flags_index])
        return True

    def _record(self, sc: Syscall, path: str | None, kind: str,
                literal: str | None = None, made: bool = True) -> None:
        """`made`: False for an open with O_CREAT that may have found the file there (no
        O_EXCL): no proof a name was made in the directory (trace/dac.py)."""
        if path is None:
            return
        p = self.profile
        if literal is not None and kind in WRITE_KINDS and sc.ok:
            written = _normalize(literal)
            if written != path:
                self._note("written through a symlink (recorded where it led)",
                           f"{written} -> {path}")
        if not sc.ok:
            if sc.errno is not None:
                p.add_failed_path(path, sc.errno)
            return
        p.add_path(path, kind)
        if kind in WRITE_KINDS and made and self._as_root(sc.pid):
            p.add_root_write(path, kind)
        if path.startswith("/proc/") and (kind != "stat" or "readlink" in sc.name):
            self._proc_of_another(sc, path)
        self._path_flags(path, kind)

    def _proc_of_another(self, sc: Syscall, path: str) -> None:
        """CAP_SYS_PTRACE: what /proc shows of a process of another uid (_PROC_TRACED) read
        or resolved. A followed target's uid is the trace's, another's read from /proc as the
        line arrives (as for kill)."""
        m = _PROC_TRACED.match(path)
        if m is None or sc.pid in self.split_ids:
            return
        target = int(m.group(1))
        if target == sc.pid:
            return
        me = self.uid.get(sc.pid, self.start_uid)
        if target in self.pids:
            them: tuple[int, ...] | None = None if target in self.split_ids else (
                self.uid.get(target, self.start_uid),)
        else:
            them = _proc_uids(target)
        if them and me not in them:
            self._add_cap(sc, "CAP_SYS_PTRACE", f"{sc.name} {path} of pid {target} (uid "
                                                f"{'/'.join(map(str, sorted(set(them))))}) "
                                                f"by uid {me}")

    def _path_flags(self, path: str, kind: str) -> None:
        p = self.profile
        if kind in WRITE_KINDS:
            if path.startswith("/proc/sys/"):
                p.add_flag("proc_sys_write", path)
            elif path.startswith("/sys/fs/cgroup/"):
                p.add_flag("cgroup_write", path)
            elif path.startswith("/sys/"):
                p.add_flag("sys_write", path)
        if path.startswith("/dev/"):
            if path in ("/dev/kmsg",):
                p.add_flag("kernel_log", path)
            if (kind not in ("stat",) and path not in PSEUDO_DEVICES
                    and not path.startswith(PSEUDO_DEVICE_PREFIXES) and _is_device(path)):
                p.add_flag("device_nodes", path)
        elif path.startswith("/proc/"):
            if path == "/proc/kmsg":
                p.add_flag("kernel_log", path)
            m = _PROC_PID.match(path)
            if m is not None and int(m.group(1)) not in self.pids:
                p.add_flag("proc_other_pids", path)

    def _path_call(self, sc: Syscall) -> None:
        kind, dirfd, index = PATH_CALLS[sc.name]
        if kind == "?open":
            self._open(sc, dirfd, index)
            return
        literal = self.literal(sc, dirfd, index)
        flags_at = _AT_FLAGS_INDEX.get(sc.name)
        path = (self.kernel_path(sc.pid, literal, self._follows(sc, flags_at))
                if literal is not None else None)
        if kind == "exec":
            self._exec(sc, path)
            return
        if sc.name in ("chmod", "fchmodat", "fchmodat2"):
            self._chmod_bits(sc, path, index + 1)
        if sc.name in ("chown", "lchown", "fchownat"):
            self._chown(sc, index + 1)
        if sc.name in ("mknod", "mknodat") and any(
            t in sc.args[index + 1] for t in ("S_IFCHR", "S_IFBLK")
        ):
            self.profile.add_flag("device_nodes", f"mknod {path}")
        if sc.name == "chdir" and sc.ok and path is not None:
            self.cwd[sc.pid] = path
        if sc.name == "chroot" and sc.ok:
            # `path` is on our side (through any chroot it was already in)
            if path == "/":
                self.chrooted.pop(sc.pid, None)
            else:
                self.chrooted[sc.pid] = path or ""
                if path and path not in self.chroot_dirs and len(self.chroot_dirs) < 64:
                    self.chroot_dirs.append(path)
        self._record(sc, path, kind, literal)

    def _open(self, sc: Syscall, dirfd: int | None, index: int) -> None:
        flags = sc.args[index + 1] if index + 1 < len(sc.args) else ""
        if sc.name == "creat":
            flags = "O_WRONLY|O_CREAT|O_TRUNC"
        path = sc.ret_path if sc.ok else None  # -y: the file the kernel opened
        if path is None:
            path = self.resolve(sc, dirfd, index)
        self._opened(sc, path, flags)

    def opened(self, pid: int, path: str, dir_path: str | None, flags: str,
               errno: str | None, root: tuple[int, int] | None = None,
               start_dir: tuple[int, int] | None = None) -> bool:
        """An open the kernel reported (trace/opens.py) instead of strace; False if `pid` is
        not one of the traced program's, or its chroot is not known yet. The kernel's facts
        place it, not what strace told of the process so far (its line of a chroot or chdir
        may come later): `root` is the (device, inode) of its root when that is not strace's,
        `start_dir` of the directory a relative path started at, which is `dir_path` (read
        from /proc and checked) or, if it could not be read, the cwd known here if that is it."""
        with self.lock:
            if pid not in self.pids:
                return False
            chroot = None if root is None else self._chroot_dir(pid, root)
            if root is not None and chroot is None:
                return False  # strace's line of that chroot has not come (yet)
            # a relative path's links are read as the recorder knows the process now
            chrooted = None if not path.startswith("/") else root is not None
            if not path.startswith("/"):
                if dir_path is None:
                    dir_path = self.cwd.get(pid, self.root_cwd)
                    if start_dir is not None and not is_inode(dir_path, *start_dir):
                        self._note("opened relative to a directory the process had left when "
                                   "it was read: left out", path)
                        return True
                path = os.path.join(dir_path, path)
            elif chroot is not None:
                path = _below(chroot, path)
            sc = Syscall(pid, "openat", [], "-1" if errno else "3", None, errno)
            if errno is not None:
                errs = self.profile.failed_syscalls.setdefault("openat", {})
                errs[errno] = errs.get(errno, 0) + 1
            # strace's -y names the opened file itself: symlinks and `..` resolved, as here,
            # but seen from the traced process, not from us (/proc/self, /dev/stdin).
            self._opened(sc, self.kernel_path(pid, path, True, chrooted), flags)
            return True

    def _chroot_dir(self, pid: int, root: tuple[int, int]) -> str | None:
        """The chroot directory (on our side) that is the inode `root`, among those strace
        reported; the process's own if several are."""
        found = [d for d in self.chroot_dirs if is_inode(d, *root)]
        if len(found) > 1 and self.chrooted.get(pid, None) in found:
            return self.chrooted[pid]
        return found[0] if len(found) == 1 else None

    def kernel_call(self, sc: Syscall, listener: tuple[str, str] | None = None) -> bool:
        """A call the kernel reported (trace/kernel.py) instead of strace, in strace's form;
        False if `sc.pid` is not one of the traced program's. `listener`: the family and type
        (AF_INET, SOCK_STREAM) of the socket an accept() took from, which strace's line of
        its socket() may not have told yet."""
        with self.lock:
            if sc.pid not in self.pids:
                return False
            m = _SOCKET_INODE.search(sc.args[0]) if listener and sc.args else None
            if m is not None and listener is not None and m.group(1) not in self.sockets:
                if len(self.sockets) >= SOCKETS_MAX:
                    del self.sockets[next(iter(self.sockets))]
                self.sockets[m.group(1)] = _Socket(listener[0],
                                                   _SOCK_PROTO.get(listener[1], listener[1]))
            self._syscall(sc)
            return True

    def kernel_socket_used(self, sc: Syscall) -> bool:
        """The kernel saw the socket of a privileged option (`sc`: its bind or connect, fd
        only) bound or connected: what strace's line of that call would have shown."""
        with self.lock:
            if sc.pid not in self.pids:
                return False
            self._socket_used(sc)
            return True

    def _opened(self, sc: Syscall, path: str | None, flags: str) -> None:
        if "O_PATH" in flags:
            self._record(sc, path, "stat")
            return
        if path == "/proc/kmsg" and sc.ok:
            # opening it is syslog(2)'s SYSLOG_ACTION_OPEN, checked whatever dmesg_restrict
            self._add_cap(sc, "CAP_SYSLOG", "/proc/kmsg opened (rsyslog's imklog)")
        if "O_WRONLY" in flags or "O_RDWR" in flags or "O_TRUNC" in flags:
            self._record(sc, path, "write")
        else:
            self._record(sc, path, "read")
        if "O_CREAT" in flags or "O_TMPFILE" in flags:
            self._record(sc, path, "create", made="O_EXCL" in flags or "O_TMPFILE" in flags)

    def _exec(self, sc: Syscall, path: str | None) -> None:
        self._record(sc, path, "exec")
        if path is None or not sc.ok:
            return
        self._setuid_exec(sc.pid, path)
        p = self.profile
        if path not in p.execs:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = 0
            p.execs[path] = {"setuid": bool(mode & stat.S_ISUID),
                             "setgid": bool(mode & stat.S_ISGID)}
            if mode & (stat.S_ISUID | stat.S_ISGID):
                p.add_flag("suid_exec", path)
            if _file_capabilities(path):
                # squid's pinger (cap_net_raw+ep): under NoNewPrivileges= it loses them and
                # logs "Open icmp_sock: (1) Operation not permitted" to its own log file
                p.add_flag("filecap_exec", path)

    def _setuid_exec(self, pid: int, path: str) -> None:
        """A set-user-ID program runs with its owner's uid as effective and saved uid, the real
        one kept (split): exim4's daemon, uid 109, runs /usr/sbin/exim4 (root's, setuid) for
        each delivery, which is root until it drops. Read from the host as the line arrives.
        The kernel ignores the bit on a nosuid mount and for a process with no_new_privs;
        where that cannot be told (the process is already gone), nothing changes: a uid
        believed wrongly would credit the calls that follow with needs they did not have."""
        try:
            st = os.stat(path)
            if not st.st_mode & (stat.S_ISUID | stat.S_ISGID) or \
                    os.statvfs(path).f_flag & os.ST_NOSUID or _no_new_privs(pid) is not False:
                return
        except OSError:
            return
        if st.st_mode & stat.S_ISUID and st.st_uid != self.uid.get(pid, self.start_uid):
            self.uid[pid] = st.st_uid
            self.split_ids.add(pid)
        if st.st_mode & stat.S_ISGID and st.st_gid != self.gid.get(pid, self.start_gid):
            self.gid[pid] = st.st_gid

    def _chmod_bits(self, sc: Syscall, path: str | None, mode_index: int) -> None:
        if not sc.ok or mode_index >= len(sc.args):
            return
        mode = sc.args[mode_index]
        try:
            bits = int(mode, 8)
        except ValueError:
            bits = 0o6000 if ("S_ISUID" in mode or "S_ISGID" in mode) else 0
        if bits & 0o6000:
            self.profile.add_flag("setuid_bits_set", f"{path} {mode}")
        self._chmod_owner(sc, path)

    def _chmod_owner(self, sc: Syscall, path: str | None) -> None:
        """CAP_FOWNER: a mode changed on a file another uid owns (only its owner may change it:
        inode_owner_or_capable). Its owner is read from the host as the line arrives: by the
        end of the trace the file may be gone or given away (exim4's root delivery process
        chowns each message log to Debian-exim, chmods it, and deletes it once delivered)."""
        if path is None or sc.pid in self.split_ids:
            return
        me = self.uid.get(sc.pid, self.start_uid)
        owner = dac.owner_of(path)
        if owner is not None and owner != me:
            self._add_cap(sc, "CAP_FOWNER", f"{sc.name} {path} (owned by uid {owner}) by uid {me}")

    def _chown(self, sc: Syscall, uid_index: int) -> None:
        """CAP_CHOWN: the owner set to another uid than the caller's, or the group to one
        the caller is not in (chown_ok/chgrp_ok in the kernel; -1 changes nothing)."""
        if not sc.ok or uid_index + 1 >= len(sc.args):
            return
        uid = _int_arg(sc.args[uid_index])
        gid = _int_arg(sc.args[uid_index + 1])
        me = self.uid.get(sc.pid, self.start_uid)
        mine = {self.gid.get(sc.pid, self.start_gid),
                *self.groups.get(sc.pid, frozenset())}
        if uid is not None and uid != me:
            self._add_cap(sc, "CAP_CHOWN", f"{sc.name} to uid {uid} by uid {me}")
        elif gid is not None and gid not in mine:
            self._add_cap(sc, "CAP_CHOWN", f"{sc.name} to gid {gid}, not a group of the caller")

    def _fd_call(self, sc: Syscall) -> None:
        kind, index = FD_CALLS[sc.name]
        path = fd_path(sc.args[index]) if index < len(sc.args) else None
        if sc.name == "fchdir" and sc.ok and path is not None:
            self.cwd[sc.pid] = path
        if sc.name == "fchmod":
            self._chmod_bits(sc, path, 1)
        if sc.name == "fchown":
            self._chown(sc, 1)
        self._record(sc, path, kind)

    def _two_path_call(self, sc: Syscall) -> None:
        old_kind, new_kind, od, oi, nd, ni = TWO_PATH_CALLS[sc.name]
        old_follow = sc.name == "linkat" and len(sc.args) > 4 and "AT_SYMLINK_FOLLOW" in sc.args[4]
        for d, i, kind, follow in ((od, oi, old_kind, old_follow), (nd, ni, new_kind, False)):
            literal = self.literal(sc, d, i)
            path = self.kernel_path(sc.pid, literal, follow) if literal is not None else None
            self._record(sc, path, kind, literal)

    def _symlink_call(self, sc: Syscall) -> None:
        dirfd, index = SYMLINK_CALLS[sc.name]
        literal = self.literal(sc, dirfd, index)
        path = self.kernel_path(sc.pid, literal, False) if literal is not None else None
        self._record(sc, path, "create", literal)

    # -- sockets ---------------------------------------------------------------------------
    def _socket(self, sc: Syscall) -> None:
        if len(sc.args) < 3:
            return
        family, stype, proto = sc.args[0], sc.args[1], sc.args[2]
        p = self.profile
        if not sc.ok and sc.errno in ("EAFNOSUPPORT", "EPERM", "EACCES"):
            p.add_failed_path(f"socket:{family}", sc.errno)
        if not family.startswith("AF_") or not sc.ok:
            return
        p.add_family(family)
        base_type = stype.split("|", 1)[0]
        p.socket_types[f"{family}/{base_type}"] = p.socket_types.get(f"{family}/{base_type}",
                                                                     0) + 1
        if family == "AF_NETLINK":
            p.netlink[proto] = p.netlink.get(proto, 0) + 1
        # CAP_NET_RAW: packet sockets, raw IP sockets; AF_NETLINK's SOCK_RAW is its usual type
        # and needs nothing, nor do ICMP "ping" datagram sockets.
        if family == "AF_PACKET" or (base_type == "SOCK_RAW"
                                     and family in ("AF_INET", "AF_INET6")):
            self._add_cap(sc, "CAP_NET_RAW", f"socket({family}, {base_type})")
        if sc.ok and sc.ret_deco:
            m = _SOCKET_INODE.match(sc.ret_deco)
            if m is not None:
                if len(self.sockets) >= SOCKETS_MAX:  # closes are not traced: forget the oldest
                    del self.sockets[next(iter(self.sockets))]
                self.sockets[m.group(1)] = _Socket(family, _SOCK_PROTO.get(base_type, base_type))

    def _socketpair(self, sc: Syscall) -> None:
        if sc.args and sc.args[0].startswith("AF_"):
            self.profile.add_family(sc.args[0])

    def _sock_of(self, tok: str) -> _Socket | None:
        m = _SOCKET_INODE.search(tok)
        return self.sockets.get(m.group(1)) if m else None

    def _sockaddr(self, sc: Syscall, fd_index: int, addr_text: str) -> tuple[str, Endpoint | None,
                                                                               str | None]:
        """(family, IP endpoint or None, unix path or None) of a decoded sockaddr."""
        fm = _FAMILY.search(addr_text)
        family = fm.group(1) if fm else ""
        sock = self._sock_of(sc.args[fd_index]) if fd_index < len(sc.args) else None
        proto = sock.proto if sock else "any"
        if family in ("AF_INET", "AF_INET6"):
            pm = _PORT.search(addr_text)
            am = (_ADDR4 if family == "AF_INET" else _ADDR6).search(addr_text)
            if pm and am:
                return family, Endpoint(family, proto, am.group(1), int(pm.group(1))), None
        elif family == "AF_UNIX":
            um = _SUN_PATH.search(addr_text)
            if um:
                path = string_arg(um.group(2))
                if path is not None and um.group(1):
                    return family, None, "@" + path
                if path:  # relative to the caller's cwd, like any path
                    base = self.cwd.get(sc.pid, self.root_cwd)
                    return family, None, os.path.join(base, path)
        return family, None, None

    def _bind(self, sc: Syscall) -> None:
        if len(sc.args) < 2:
            return
        _, ep, upath = self._sockaddr(sc, 0, sc.args[1])
        p = self.profile
        if not sc.ok:
            if ep is not None and sc.errno:
                p.add_failed_path(f"bind:{ep.proto}:{ep.port}", sc.errno)
            return
        self._socket_used(sc)
        if ep is not None:
            self._endpoint(p.binds, ep)
            if 0 < ep.port < 1024:
                self._add_cap(sc, "CAP_NET_BIND_SERVICE", f"bind to {ep.proto} port {ep.port}")
        elif upath is not None:
            if not upath.startswith("@"):  # bind() creates the name: not followed
                upath = self.kernel_path(sc.pid, upath, False)
                p.add_path(upath, "create")
                if self._as_root(sc.pid):
                    p.add_root_write(upath, "create")
            self._unix(upath, "bind")

    def _endpoint(self, endpoints: set[Endpoint], ep: Endpoint) -> None:
        if ep in endpoints:
            return
        if len(endpoints) >= ENDPOINTS_MAX:
            self.endpoint_overflow += 1
            return
        endpoints.add(ep)

    def _unix(self, path: str, op: str) -> None:
        ops = self.profile.unix_sockets.setdefault(path, {})
        ops[op] = ops.get(op, 0) + 1

    def _peer(self, sc: Syscall, addr_index: int, inbound: bool) -> None:
        if addr_index >= len(sc.args):
            return
        addr_text = sc.args[addr_index]
        if inbound:  # the address is an output: only meaningful on success
            if not sc.ok:
                return
        elif not sc.ok and sc.errno not in _ATTEMPT_ERRNOS:
            return
        if not inbound:
            self._socket_used(sc)
        _, ep, upath = self._sockaddr(sc, 0, addr_text)
        if ep is not None:
            self._endpoint(self.profile.inbound if inbound else self.profile.peers, ep)
        elif upath is not None and not inbound:
            if not upath.startswith("@"):
                upath = self.kernel_path(sc.pid, upath, True)
            self._unix(upath, "connect")
            if not upath.startswith("@") and sc.ok:
                # connect() needs the socket visible, not a writable file system
                self.profile.add_path(upath, "read")
            if not upath.startswith("@") and (sc.ok or sc.errno == "ECONNREFUSED"):
                self._socket_file_need(sc, upath)

    def _socket_file_need(self, sc: Syscall, path: str) -> None:
        """CAP_DAC_OVERRIDE: connect() to a socket file needs write permission on it (the
        kernel checks before it finds no listener: ECONNREFUSED passed the check). Its owner
        and mode are read as the line arrives: dovecot's root master connects to its stale
        login sockets (dovenull's, 0600) and only then makes them anew; without the
        capability it stopped with "Dovecot is already running?"."""
        if not self._as_root(sc.pid):
            return
        f = Fact.of_host(path)
        if f.kind != "missing" and not dac.root_allows(f, dac.W):
            self._add_cap(sc, "CAP_DAC_OVERRIDE", f"connect to {dac.describe(path, f)}, which "
                                                  "root cannot write by its mode bits")

    def _connect(self, sc: Syscall) -> None:
        self._peer(sc, 1, inbound=False)

    def _sendto(self, sc: Syscall) -> None:
        self._peer(sc, 4, inbound=False)

    def _sendmsg(self, sc: Syscall) -> None:
        if len(sc.args) > 1 and "msg_name={" in sc.args[1]:
            self._peer(sc, 1, inbound=False)

    def _accept(self, sc: Syscall) -> None:
        self._peer(sc, 1, inbound=True)
        if sc.ok and sc.ret_deco:
            listener = self._sock_of(sc.args[0]) if sc.args else None
            m = _SOCKET_INODE.match(sc.ret_deco)
            if listener is not None and m is not None:
                if len(self.sockets) >= SOCKETS_MAX:
                    del self.sockets[next(iter(self.sockets))]
                self.sockets[m.group(1)] = listener

    def _recvfrom(self, sc: Syscall) -> None:
        self._peer(sc, 4, inbound=True)

    # -- processes and credentials ---------------------------------------------------------
    def _namespaces(self, sc: Syscall, text: str) -> None:
        for f in NAMESPACE_FLAGS:  # one example per type, so none is lost to the example cap
            if f in text:
                self.profile.add_flag("namespaces", f)

    def _new_namespaces(self, sc: Syscall, text: str) -> None:
        """CAP_SYS_ADMIN for namespaces made without a new user namespace in the same call
        (with one, the kernel creates the user namespace first and checks in it)."""
        if USERNS_FLAG in text:
            return
        made = [f for f in NAMESPACE_FLAGS if f in text and f != USERNS_FLAG]
        if made:
            self._add_cap(sc, "CAP_SYS_ADMIN", f"new namespace ({sc.name} {made[0]})")

    def _clone(self, sc: Syscall) -> None:
        text = sc.args[0] if sc.name == "clone3" and sc.args else ", ".join(sc.args)
        self._namespaces(sc, text)
        if sc.ok:
            self._new_namespaces(sc, text)
        if sc.ok and sc.ret.isdigit():
            child = int(sc.ret)
            if _CLONE_FS.search(text):  # a thread: one cwd and root with its creator
                self.fs_of[child] = self.fs_of.get(sc.pid, sc.pid)
            self.cwd[child] = self.cwd.get(sc.pid, self.root_cwd)
            self.uid[child] = self.uid.get(sc.pid, self.start_uid)
            self.gid[child] = self.gid.get(sc.pid, self.start_gid)
            if sc.pid in self.groups:
                self.groups[child] = self.groups[sc.pid]
            if sc.pid in self.userns or USERNS_FLAG in text:
                self.userns.add(child)
            if sc.pid in self.chrooted:
                self.chrooted[child] = self.chrooted[sc.pid]
            for inherited in (self.fs_ids, self.split_ids):
                if sc.pid in inherited:
                    inherited.add(child)
            self._track(child)
            self._replay(child)

    def _setns(self, sc: Syscall) -> None:
        self._namespaces(sc, sc.args[1] if len(sc.args) > 1 else "")
        if len(sc.args) > 1 and sc.args[1] == "0":
            self.profile.add_flag("namespaces", "setns(any)")

    def _unshare(self, sc: Syscall) -> None:
        text = sc.args[0] if sc.args else ""
        self._namespaces(sc, text)
        if sc.ok:
            self._new_namespaces(sc, text)
            if USERNS_FLAG in text:  # the caller now lives in it
                self.userns.add(sc.pid)

    def _ptrace(self, sc: Syscall) -> None:
        """CAP_SYS_PTRACE only to reach a process that is not a followed one of our uid."""
        if not sc.ok:
            return
        if sc.name == "ptrace":
            if len(sc.args) < 2 or sc.args[0] not in ("PTRACE_ATTACH", "PTRACE_SEIZE"):
                return
            target = _int_arg(sc.args[1])
        else:
            target = _int_arg(sc.args[0]) if sc.args else None
        me = self.uid.get(sc.pid, self.start_uid)
        if target is not None and target in self.pids and self.uid.get(target, me) == me:
            return
        self._add_cap(sc, "CAP_SYS_PTRACE", f"{sc.name} of pid {target}")

    def _setpriority(self, sc: Syscall) -> None:
        prio = _int_arg(sc.args[2]) if sc.ok and len(sc.args) > 2 else None
        if prio is not None and prio < 0:
            self._add_cap(sc, "CAP_SYS_NICE", f"setpriority to nice {prio}")

    def _setid(self, sc: Syscall) -> None:
        if not sc.ok:
            return
        which, indexes = SETID_CALLS[sc.name]
        current = self.uid if which == "uid" else self.gid
        now = current.get(sc.pid, self.start_uid if which == "uid" else self.start_gid)
        targets = []
        for i in indexes:
            if i < len(sc.args) and sc.args[i].lstrip("-").isdigit():
                v = int(sc.args[i])
                if v >= 0 and v != 4294967295:
                    targets.append(v)
        changed = [t for t in targets if t != now]
        if changed:
            cap = "CAP_SETUID" if which == "uid" else "CAP_SETGID"
            self._add_cap(sc, cap, f"{sc.name}({changed[0]}) from {which} {now}")
            self.profile.add_flag("set_ids", f"{sc.name}({', '.join(sc.args)})")
            if sc.name not in ("setfsuid", "setfsgid"):
                current[sc.pid] = changed[-1]
            else:
                self.fs_ids.add(sc.pid)
        # Only setuid() as root, or all ids given alike, leaves real, effective and saved equal.
        if which == "uid" and sc.name in ("setreuid", "setresuid"):
            if len(targets) == len(indexes) and len(set(targets)) == 1:
                self.split_ids.discard(sc.pid)
            else:
                self.split_ids.add(sc.pid)
        elif sc.name == "setuid" and now != 0:
            self.split_ids.add(sc.pid)
        elif sc.name == "setuid":  # as root: real, effective and saved all become it
            self.split_ids.discard(sc.pid)

    def _kill(self, sc: Syscall) -> None:
        """CAP_KILL: a signal delivered to a process none of whose real and saved uids is the
        sender's (the kernel lets a sender reach its own uid's processes; SIGCONT its
        session's). A followed target's uid is the trace's; another one's (the main process
        an ExecReload=/bin/kill signals) is read from /proc as the line arrives. Process groups
        and targets already gone prove nothing."""
        index = 1 if sc.name == "tgkill" else 0
        target = _int_arg(sc.args[index]) if sc.ok and index < len(sc.args) else None
        if target is None or target <= 0 or sc.pid in self.split_ids or \
                any("SIGCONT" in a for a in sc.args[index + 1:index + 2]):
            return
        me = self.uid.get(sc.pid, self.start_uid)
        if target in self.uid:
            them: tuple[int, ...] | None = None if target in self.split_ids else (
                self.uid[target],)
        else:
            them = _proc_uids(target)
        if them and me not in them:
            self._add_cap(sc, "CAP_KILL", f"{sc.name}() to pid {target} (uid "
                                          f"{'/'.join(map(str, sorted(set(them))))}) by uid {me}")

    def _setgroups(self, sc: Syscall) -> None:
        if sc.ok:
            self._add_cap(sc, "CAP_SETGID", f"setgroups({', '.join(sc.args)[:40]})")
            self.profile.add_flag("set_ids", "setgroups()")
            listed = sc.args[1].strip("[]") if len(sc.args) > 1 else ""
            self.groups[sc.pid] = frozenset(
                int(g) for g in listed.replace(",", " ").split() if g.isdigit())

    def _memory(self, sc: Syscall) -> None:
        prot = sc.args[2] if len(sc.args) > 2 else ""
        if "PROT_EXEC" in prot and (sc.name != "mmap" or "PROT_WRITE" in prot):
            self.profile.add_flag("wx_memory", f"{sc.name}({prot})")

    def _sched(self, sc: Syscall) -> None:
        joined = ", ".join(sc.args)
        if any(t in joined for t in ("SCHED_FIFO", "SCHED_RR", "SCHED_DEADLINE")):
            self.profile.add_flag("realtime", f"{sc.name}({joined[:60]})")

    def _personality(self, sc: Syscall) -> None:
        arg = sc.args[0] if sc.args else ""
        if arg not in ("0xffffffff", "PER_LINUX", "0"):
            self.profile.add_flag("personality", f"personality({arg})")


_SELF_LINKS = {"/proc/self": "/proc/{pid}", "/proc/thread-self": "/proc/{pid}/task/{pid}",
               "/dev/fd": "/proc/{pid}/fd", "/dev/stdin": "/proc/{pid}/fd/0",
               "/dev/stdout": "/proc/{pid}/fd/1", "/dev/stderr": "/proc/{pid}/fd/2"}


def _below(root: str, path: str) -> str:
    """An absolute name a process in a chroot of `root` used, as a path on our side."""
    return root + ("" if path == "/" else _normalize(path))


def _as_seen_by(pid: int, path: str) -> str:
    """`path` with the links that depend on who follows them made explicit for `pid`."""
    for link, target in _SELF_LINKS.items():
        if path == link or path.startswith(link + "/"):
            return target.format(pid=pid) + path[len(link):]
    return path


_AT_FLAGS_INDEX = {"newfstatat": 3, "fstatat64": 3, "statx": 2, "fchownat": 4, "utimensat": 3,
                   "fchmodat2": 3, "faccessat2": 3, "execveat": 4}


def _file_capabilities(path: str) -> bool:
    """Whether an executable carries file capabilities (the security.capability xattr)."""
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:  # none, or a file system without xattrs
        return False


def _status(pid: int, key: str) -> list[str] | None:
    """The words of one line of a live process's /proc status (`Uid:`...); None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key):
                    return line.split()[1:]
    except OSError:
        return None
    return None


def _no_new_privs(pid: int) -> bool | None:
    """The no_new_privs flag of a live process (set once, never cleared); None if it is gone."""
    words = _status(pid, "NoNewPrivs:")
    return words[0] != "0" if words else None


def _proc_uids(pid: int) -> tuple[int, ...] | None:
    """The real and saved uids of a live process, from /proc; None if it is gone."""
    words = _status(pid, "Uid:")
    try:
        return (int(words[0]), int(words[2])) if words else None
    except (ValueError, IndexError):
        return None


def _int_arg(token: str) -> int | None:
    """A decimal argument; None for -1 ("unchanged") and anything symbolic."""
    try:
        value = int(token)
    except ValueError:
        return None
    return None if value in (-1, 4294967295) else value


def _normalize(path: str) -> str:
    norm = os.path.normpath(path)
    return "/" if norm == "//" else norm


def _is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


_HANDLERS: dict[str, Callable[[Recorder, Syscall], None]] = {}
for _n in PATH_CALLS:
    _HANDLERS[_n] = Recorder._path_call
for _n in FD_CALLS:
    _HANDLERS[_n] = Recorder._fd_call
for _n in TWO_PATH_CALLS:
    _HANDLERS[_n] = Recorder._two_path_call
for _n in SYMLINK_CALLS:
    _HANDLERS[_n] = Recorder._symlink_call
for _n in SETID_CALLS:
    _HANDLERS[_n] = Recorder._setid
_HANDLERS.update({
    "socket": Recorder._socket, "socketpair": Recorder._socketpair, "bind": Recorder._bind,
    "kill": Recorder._kill, "tkill": Recorder._kill, "tgkill": Recorder._kill,
    "rt_sigqueueinfo": Recorder._kill, "rt_tgsigqueueinfo": Recorder._kill,
    "connect": Recorder._connect, "sendto": Recorder._sendto, "sendmsg": Recorder._sendmsg,
    "accept": Recorder._accept, "accept4": Recorder._accept, "recvfrom": Recorder._recvfrom,
    "setns": Recorder._setns, "clone": Recorder._clone, "clone3": Recorder._clone,
    "fork": Recorder._clone, "vfork": Recorder._clone, "unshare": Recorder._unshare,
    "setgroups": Recorder._setgroups, "ptrace": Recorder._ptrace,
    "process_vm_readv": Recorder._ptrace, "process_vm_writev": Recorder._ptrace,
    "setpriority": Recorder._setpriority,
    "mmap": Recorder._memory, "mprotect": Recorder._memory, "pkey_mprotect": Recorder._memory,
    "sched_setscheduler": Recorder._sched, "sched_setattr": Recorder._sched,
    "personality": Recorder._personality,
})

# The calls whose arguments are read here: the parser splits these and the fast tracer stops
# on these (trace/command.py), derived from the tables above so that none is traced for nothing.
READ_CALLS: frozenset[str] = frozenset(_HANDLERS) | frozenset(FLAG_CALLS) | frozenset(
    RULES_BY_SYSCALL)

__all__ = ["READ_CALLS", "Recorder", "unescape"]
