"""The directive catalogue: one row per systemd directive autosandbox can set.

Each row says which systemd version introduced it, which build feature it needs, what it
restricts, how it relaxes (its ladder, tightest value first; "" means "leave it unset") and how
a profile decides it: either the generic rules.flag_rule (the tightest value, unless one of
`blocked_by` flags or an access below `blocked_paths` was seen) or another rule in rules.py,
and which denials in a trial relax it (`relax`: the errno kinds and paths that name it, and
for a grant more than a step down the ladder, the function in validate/grants.py that makes it).
Adding a directive is adding a row (and, for a new kind of decision, one rule).

`user` says what a row does in a user's service manager (systemd --user), which runs
unprivileged: "yes" as in the system's; USER_NS when it needs a namespace or drops
capabilities, which such a manager can only do inside a user namespace of the service's own
(PrivateUsers=yes: without it systemd 252 fails the start with "Failed to drop capabilities",
or ignores a namespace it could not set up, measured in the integration container); any other
text is why it is left out there; "only" rows are written for user managers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from autosandbox.synth import rules
from autosandbox.synth.grants import (
    Check,
    Grant,
    add_capability,
    add_family,
    add_writable,
    allow_syscall,
    family_to_add,
    filter_refuses,
)
from autosandbox.synth.model import Denial
from autosandbox.synth.paths import HOME_DIRS


class Stage(IntEnum):
    """The order relaxation tries triggers in (then catalogue order): the most specific
    evidence first."""

    CALL = 0  # the denial names what the row refused: the family, the system call
    CALL_CAPABILITY = 1  # a refused call the filter does not explain: a capability it needs
    ERRNO = 2  # the errno alone names the row: a journal line may mention a path that is
    #            not the object
    PATH = 3  # the path lies where the row hides or freezes the file system
    ACCESS = 4  # a refused write or access no row explains: a path, a capability to grant


@dataclass(frozen=True)
class Trigger:
    """A denial in a trial that relaxes a row (validate/relax.py): of one of `kinds` (erofs,
    eacces, eperm, eafnosupport; empty: any kind), on a path matching one of `paths` ("/dir/":
    below /dir; "/dir": /dir or below; empty: any path or none) and none of `not_paths`,
    naming what `needs` says it must ("path", "syscall", "family"). It applies when `when`
    says so (none: a `grant` always, a step when the row is set); then `grant` (a function
    in validate/grants.py) widens the row by what the denial names, or, without one, the row
    goes one step down its ladder. The first trigger that applies decides for the denial,
    whether it relaxed anything or not."""

    stage: Stage
    kinds: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()
    needs: Literal["path", "syscall", "family"] | None = None
    when: Check | None = None
    grant: Grant | None = None

    def matches(self, dn: Denial) -> bool:
        """Whether the denial is of this trigger's kind, place and detail."""
        if self.kinds and dn.kind not in self.kinds:
            return False
        if self.needs is not None and not {"path": dn.path, "syscall": dn.syscall,
                                           "family": dn.family}[self.needs]:
            return False
        if self.paths and not (dn.path is not None and _below(dn.path, self.paths)):
            return False
        return not (self.not_paths and dn.path is not None and _below(dn.path, self.not_paths))


def _below(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path.startswith(p) if p.endswith("/") else path == p or path.startswith(p + "/")
               for p in prefixes)


@dataclass(frozen=True)
class Directive:
    name: str
    since: int
    restricts: str
    ladder: tuple[str, ...]
    rule: rules.Rule = rules.flag_rule
    feature: str | None = None
    blocked_by: tuple[str, ...] = ()
    blocked_paths: tuple[str, ...] = ()
    grants: bool = False  # widens what the sandbox allows (never the cause of a breakage)
    # The denials in a trial that relax this row (validate/relax.py). A row with none is
    # relaxed by disk changes (relax_disk) or by bisection only.
    relax: tuple[Trigger, ...] = ()
    user: str = "yes"
    # A learned list that bisection blames is first widened by these, once, before the row is
    # left unset (a step between what was seen and everything).
    widen: tuple[str, ...] = ()

    @property
    def tightest(self) -> str:
        return self.ladder[0]

    def looser(self, value: str) -> str | None:
        """The next step down the ladder from `value` (a learned list counts as the first
        step, widened once by `widen` if the row has one); None when already at the bottom."""
        words = set(value.split())
        if self.widen and not set(self.widen) <= words and (
                value == "" or value not in self.ladder):  # "": an empty list, not unset
            return " ".join(sorted(words | set(self.widen)))
        try:
            i = self.ladder.index(value)
        except ValueError:
            if not self.ladder[0].startswith("<"):
                return None
            i = 0
        return self.ladder[i + 1] if i + 1 < len(self.ladder) else None


USER_NS = "needs PrivateUsers="
_NO_CAPS = ("a user's manager runs without capabilities: it has none to take away, and "
            "dropping them from the bounding set needs CAP_SETPCAP, which it lacks (the unit "
            "would not start)")
_NO_BPF = ("a user's manager cannot attach the BPF programs that enforce it (it would be "
           "ignored)")
_NO_EXEC_DIR = ("in a user's manager it names a directory below $XDG_CONFIG_HOME, "
                "$XDG_CACHE_HOME or $XDG_RUNTIME_DIR, not the system's; left to ReadWritePaths=")
D = Directive
T = Trigger
# The API file systems: a write refused there is not a path to grant (the rows that freeze
# them name their own paths).
API_FS = ("/proc/", "/sys/", "/dev/")
CATALOGUE: tuple[Directive, ...] = (
    # -- file system ---------------------------------------------------------------------
    D("PrivateUsers", 232, "a user namespace of its own (only its user is mapped), in which a "
      "user's manager may set up the namespaced directives", ("yes", ""), rule=rules.private_users,
      user="only"),
    D("ProtectSystem", 232, "mounts the whole file system read-only except /dev, /proc, /sys",
      ("strict", "full", "yes", ""), rule=rules.protect_system, user=USER_NS),
    D("ReadWritePaths", 231, "paths left writable under ProtectSystem=strict",
      ("<paths>", ""), rule=rules.write_paths, grants=True, user=USER_NS,
      relax=(T(Stage.ACCESS, frozenset({"erofs"}), needs="path", not_paths=API_FS,
               grant=add_writable),)),
    D("StateDirectory", 235, "/var/lib/NAME, created and made writable by systemd",
      ("<names>", ""), rule=rules.write_paths, grants=True, user=_NO_EXEC_DIR),
    D("CacheDirectory", 235, "/var/cache/NAME, created and made writable by systemd",
      ("<names>", ""), rule=rules.write_paths, grants=True, user=_NO_EXEC_DIR),
    D("LogsDirectory", 235, "/var/log/NAME, created and made writable by systemd",
      ("<names>", ""), rule=rules.write_paths, grants=True, user=_NO_EXEC_DIR),
    D("RuntimeDirectory", 211, "/run/NAME, created at start and removed at stop",
      ("<names>", ""), rule=rules.write_paths, grants=True, user=_NO_EXEC_DIR),
    D("ProtectHome", 214, "/home, /root and /run/user",
      ("yes", "read-only", ""), rule=rules.protect_home, user=USER_NS,
      relax=(T(Stage.PATH, paths=HOME_DIRS),)),
    D("PrivateTmp", 187, "a private /tmp and /var/tmp", ("yes", ""), rule=rules.private_tmp,
      user=USER_NS),
    D("PrivateDevices", 209, "a private /dev with pseudo devices only",
      ("yes", ""), blocked_by=("device_nodes",), user=USER_NS,
      relax=(T(Stage.PATH, paths=("/dev/",)),)),
    D("DevicePolicy", 208, "access to device nodes (with DeviceAllow=)",
      ("closed", ""), rule=rules.devices, user=_NO_BPF),
    D("ProtectKernelTunables", 232, "/proc/sys, /sys and kernel variables read-only",
      ("yes", ""), blocked_by=("proc_sys_write", "sys_write"),
      relax=(T(Stage.PATH, frozenset({"erofs"}), ("/proc/sys/", "/sys/")),),
      blocked_paths=("/proc/kallsyms", "/proc/kcore", "/proc/sysrq-trigger", "/proc/latency_stats",
                     "/proc/timer_list", "/proc/acpi", "/proc/fs", "/proc/irq", "/proc/scsi"),
      user=USER_NS),
    D("ProtectKernelModules", 232, "loading kernel modules; hides /usr/lib/modules",
      ("yes", ""), blocked_by=("module_load",),
      blocked_paths=("/usr/lib/modules", "/lib/modules"), user=USER_NS),
    D("ProtectKernelLogs", 244, "the kernel log ring buffer", ("yes", ""),
      blocked_by=("kernel_log",), blocked_paths=("/dev/kmsg", "/proc/kmsg"), user=USER_NS),
    D("ProtectControlGroups", 232, "the cgroup hierarchy read-only", ("yes", ""),
      blocked_by=("cgroup_write",), user=USER_NS),
    D("ProtectClock", 245, "setting the system clock", ("yes", ""), blocked_by=("clock_set",),
      user=USER_NS),
    D("ProtectHostname", 242, "changing the host name", ("yes", ""),
      blocked_by=("hostname_set",), user=USER_NS),
    D("ProtectProc", 247, "other users' processes in /proc", ("invisible", ""),
      blocked_by=("proc_other_pids",), user=USER_NS),
    D("ProcSubset", 247, "non-process files in /proc", ("pid", ""), rule=rules.proc_subset,
      user=USER_NS),
    # -- network -------------------------------------------------------------------------
    D("PrivateNetwork", 33, "all networking but a private loopback", ("yes", ""),
      rule=rules.private_network, user=USER_NS),
    D("RestrictAddressFamilies", 211, "socket address families",
      ("<families>", "AF_UNIX AF_NETLINK AF_INET AF_INET6", ""), rule=rules.address_families,
      relax=(T(Stage.CALL, frozenset({"eafnosupport"}), needs="family", when=family_to_add,
               grant=add_family),
             T(Stage.ERRNO, frozenset({"eafnosupport"})))),
    D("IPAddressDeny", 235, "IP traffic to and from other hosts (with IPAddressAllow=)",
      ("any", ""), rule=rules.ip_addresses, user=_NO_BPF),
    D("SocketBindDeny", 249, "ports the service may bind (with SocketBindAllow=)",
      ("any", ""), rule=rules.socket_bind, feature="BPF_FRAMEWORK", user=_NO_BPF),
    # -- privileges ----------------------------------------------------------------------
    D("CapabilityBoundingSet", 187, "capabilities any process of the service can ever have",
      ("<caps>", ""), rule=rules.capabilities, user=_NO_CAPS,
      relax=(T(Stage.CALL_CAPABILITY, frozenset({"eperm"}), needs="syscall",
               grant=add_capability),
             T(Stage.ACCESS, frozenset({"eacces"}), needs="path", grant=add_capability)),
      # What root does to other users' files and processes: checks the kernel makes inside
      # calls that succeed as root either way, the usual cause no denial names (exim4: a
      # chmod of a file it gave away). Before, bisection left the set unset: every capability,
      # CAP_SYS_ADMIN and CAP_SYS_MODULE among them.
      widen=("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
             "CAP_KILL", "CAP_SETGID", "CAP_SETUID")),
    D("NoNewPrivileges", 187, "gaining privileges through setuid binaries or file caps",
      ("yes", ""), blocked_by=("suid_exec", "filecap_exec")),
    D("RestrictSUIDSGID", 242, "creating setuid/setgid files", ("yes", ""),
      blocked_by=("setuid_bits_set",)),
    D("RestrictNamespaces", 233, "creating namespaces", ("yes", "<namespaces>", ""),
      rule=rules.namespaces),
    D("RestrictRealtime", 231, "realtime scheduling", ("yes", ""), blocked_by=("realtime",)),
    D("LockPersonality", 235, "changing the execution domain", ("yes", ""),
      blocked_by=("personality",)),
    D("MemoryDenyWriteExecute", 231, "writable and executable memory", ("yes", ""),
      blocked_by=("wx_memory",)),
    D("PrivateIPC", 248, "the host's SysV IPC and POSIX message queues", ("yes", ""),
      blocked_by=("sysv_ipc",), blocked_paths=("/dev/mqueue",), user=USER_NS),
    D("RemoveIPC", 232, "IPC objects left behind by the service's user", ("yes", ""),
      blocked_by=("sysv_ipc",),
      user="it removes the IPC objects of a system user when its service stops"),
    D("UMask", 1, "permissions of created files", ("0077", "0027", ""), rule=rules.umask),
    # -- system calls --------------------------------------------------------------------
    D("SystemCallArchitectures", 209, "system calls of foreign architectures", ("native", ""),
      rule=rules.architectures),
    D("SystemCallFilter", 187, "system calls outside an allow-list (fail with EPERM)",
      ("<allow-list>", "@system-service", ""), rule=rules.syscall_filter,
      relax=(T(Stage.CALL, frozenset({"eperm"}), needs="syscall", when=filter_refuses,
               grant=allow_syscall),)),
)

BY_NAME: dict[str, Directive] = {d.name: d for d in CATALOGUE}

# Directives a rule writes in pairs with the one it is catalogued under.
COMPANIONS: dict[str, str] = {
    "DeviceAllow": "DevicePolicy",
    "IPAddressAllow": "IPAddressDeny",
    "SocketBindAllow": "SocketBindDeny",
    "SystemCallErrorNumber": "SystemCallFilter",
    "RuntimeDirectoryPreserve": "RuntimeDirectory",
    "ReadOnlyPaths": "ProtectSystem",  # the separate file systems strict must cover
}
# Companions that hold only with their row at its tightest value: relaxing the row drops them
# (ProtectSystem=full leaves /run writable by design).
TIGHTEST_ONLY = frozenset({"ReadOnlyPaths"})
