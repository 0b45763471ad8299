"""The table that infers capabilities from system calls (their names: linux/capabilities.py).

The table is data: each row says which syscalls (and which argument tokens) show a need for a
capability, and the reason that is kept as evidence. Checks the kernel really made are read
from tracefs (see tracefs.py) where the kernel has the `capability:cap_capable` tracepoint.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CapRule:
    """A successful call to one of `syscalls` shows a need for `cap` when its argument number
    `arg` (all arguments if None) holds one of `tokens` (any call if `tokens` is empty).

    Only calls whose success proves the check: the kernel asks for these capabilities whatever
    the caller's ids (inside a user namespace of its own, the recorder infers nothing)."""

    cap: str
    syscalls: frozenset[str]
    reason: str
    tokens: tuple[str, ...] = ()
    arg: int | None = None
    # A socket option: a need only once the socket is bound or connected (the recorder
    # holds it until then; a socket set and closed unused was a probe).
    on_use: bool = False
    # Checked only when the option is turned on: a value of [0] needs nothing.
    enabling: bool = False

    def matches(self, args: list[str]) -> bool:
        if self.enabling and (len(args) < 4 or args[3].replace(" ", "") in ("[0]", "0")):
            return False
        if not self.tokens:
            return True
        if self.arg is None:
            text = ", ".join(args)
            return any(t in text for t in self.tokens)
        if self.arg >= len(args):
            return False
        words = set(args[self.arg].replace("|", " ").split())
        return any(t in words for t in self.tokens)


def _s(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Rows that need state are applied by the recorder, which knows the process's ids, the
# sockets' families and which processes live in a user namespace of their own:
#   CAP_NET_BIND_SERVICE: bind() to a port below 1024
#   CAP_SETUID / CAP_SETGID: set*uid/set*gid to ids other than the current ones, setgroups()
#   CAP_CHOWN: chown to another uid, or to a group the process is not in
#   CAP_NET_RAW: AF_PACKET sockets, SOCK_RAW on AF_INET/AF_INET6 (not AF_NETLINK's SOCK_RAW)
#   CAP_SYS_ADMIN: namespaces created without a new user namespace in the same call
#   CAP_SYS_PTRACE: ptrace/process_vm_* of a process that is not a followed one of the same uid
#   CAP_SYS_NICE: a nice value below 0
#   CAP_KILL: a signal to a process none of whose real and saved uids is the sender's
# and, with the host facts at the end of the trace (facts.py, dac.py):
#   CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: what processes running as root wrote where the
#   owner and mode bits alone refuse root (a root master in its service user's directory)
CAP_RULES: tuple[CapRule, ...] = (
    # Socket options are matched on the option argument itself (the fd's -y decoration and
    # the value may hold anything). SO_MARK: NET_ADMIN (or NET_RAW since 5.17, either does).
    CapRule("CAP_NET_ADMIN", _s("setsockopt"), "privileged socket option",
            ("SO_MARK", "SO_SNDBUFFORCE", "SO_RCVBUFFORCE", "SO_BUSY_POLL_BUDGET"), arg=2,
            on_use=True),
    # IP(V6)_TRANSPARENT and SO_DEBUG are checked only when turned on (val != 0).
    CapRule("CAP_NET_ADMIN", _s("setsockopt"), "privileged socket option turned on",
            ("SO_DEBUG", "IP_TRANSPARENT", "IPV6_TRANSPARENT"), arg=2, on_use=True,
            enabling=True),
    CapRule("CAP_NET_RAW", _s("setsockopt"), "socket bound to a device",
            ("SO_BINDTODEVICE", "SO_BINDTOIFINDEX"), arg=2, on_use=True),
    CapRule("CAP_MKNOD", _s("mknod mknodat"), "device node created", ("S_IFCHR", "S_IFBLK")),
    CapRule("CAP_SYS_CHROOT", _s("chroot"), "chroot()"),
    CapRule("CAP_SYS_ADMIN", _s("mount umount2 pivot_root fsopen fsmount move_mount open_tree"),
            "mount operation"),
    CapRule("CAP_SYS_ADMIN", _s("setns sethostname setdomainname"), "namespace/host name change"),
    CapRule("CAP_SYS_TIME", _s("settimeofday clock_settime"), "clock set"),
    CapRule("CAP_SYS_RAWIO", _s("iopl ioperm"), "I/O port access"),
    CapRule("CAP_SYS_MODULE", _s("init_module finit_module delete_module"), "kernel module"),
    CapRule("CAP_SYS_BOOT", _s("reboot kexec_load kexec_file_load"), "reboot/kexec"),
    CapRule("CAP_SYSLOG", _s("syslog"), "kernel log read via syslog(2)",
            ("SYSLOG_ACTION_READ", "SYSLOG_ACTION_READ_CLEAR", "SYSLOG_ACTION_CLEAR",
             "SYSLOG_ACTION_CONSOLE_OFF", "SYSLOG_ACTION_CONSOLE_ON",
             "SYSLOG_ACTION_CONSOLE_LEVEL"), arg=0),
    CapRule("CAP_BPF", _s("bpf"), "bpf()"),
    CapRule("CAP_PERFMON", _s("perf_event_open"), "perf_event_open()"),
    CapRule("CAP_SYS_NICE", _s("sched_setscheduler sched_setattr"), "realtime scheduling",
            ("SCHED_FIFO", "SCHED_RR", "SCHED_DEADLINE")),
    CapRule("CAP_SETPCAP", _s("prctl"), "bounding set drop", ("PR_CAPBSET_DROP",), arg=0),
    CapRule("CAP_SETFCAP", _s("setxattr lsetxattr fsetxattr"), "file capability set",
            ('"security.capability"',), arg=1),
    CapRule("CAP_LEASE", _s("fcntl"), "file lease", ("F_SETLEASE",), arg=1),
    CapRule("CAP_WAKE_ALARM", _s("timerfd_create"), "alarm clock timer",
            ("CLOCK_REALTIME_ALARM", "CLOCK_BOOTTIME_ALARM"), arg=0),
    CapRule("CAP_IPC_LOCK", _s("mlockall"), "mlockall()"),
)

RULES_BY_SYSCALL: dict[str, tuple[CapRule, ...]] = {}
for _rule in CAP_RULES:
    for _sc in _rule.syscalls:
        RULES_BY_SYSCALL[_sc] = (*RULES_BY_SYSCALL.get(_sc, ()), _rule)

# Checks the kernel makes on behalf of ordinary memory management for every process
# (security_vm_enough_memory_mm): a CAP_SYS_ADMIN check with no caller we can see is noise
# unless a syscall needing SYS_ADMIN was also seen.
NOISY_KERNEL_CAPS: frozenset[str] = frozenset({"CAP_SYS_ADMIN"})
