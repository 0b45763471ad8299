"""Which capability a denial shows the service needed, from evidence only.

A denial names a capability only when the kernel's check for that capability is what failed:
the process could have held it (it runs as root), and the call is one the capability governs.
An EACCES on a file whose mode bits let root in, or any denial of a process that runs as
another user, is an ownership or configuration problem: no capability would fix it, and none
is added (the trial log says why).
"""

from __future__ import annotations

import os

from autosandbox.linux import dac
from autosandbox.profile import Fact
from autosandbox.synth.model import Denial

CHOWN_CALLS = frozenset({"chown", "fchown", "lchown", "fchownat"})
KILL_CALLS = frozenset({"kill", "tkill", "tgkill", "rt_sigqueueinfo", "pidfd_send_signal"})
CHMOD_CALLS = frozenset({"chmod", "fchmod", "fchmodat", "fchmodat2"})


def dac_capability(path: str) -> tuple[str | None, str]:
    """The capability root lacks for `path` by the host's owners and modes now (trace/dac.py):
    CAP_DAC_READ_SEARCH when a search or read is what the bits refuse, CAP_DAC_OVERRIDE when
    only a write is, or a name made or removed in its directory; or None and why not."""
    path = os.path.realpath(path)  # as the kernel resolved it (/var/run -> /run)
    parent = os.path.dirname(path) or "/"
    facts: dict[str, Fact] = {}

    def fact_of(p: str) -> Fact | None:
        f = facts.setdefault(p, Fact.of_host(p))
        return None if f.kind == "missing" else f

    for d in (*dac.ancestors(parent), parent):
        f = fact_of(d)
        if f is None:
            return None, f"{d} cannot be looked at"
        if f.kind == "dir" and not dac.root_allows(f, dac.X):
            return "CAP_DAC_READ_SEARCH", f"{dac.describe(d, f)} is not searchable by root " \
                                          "without it"
    st = fact_of(path)
    if st is None:
        entry = dac.entry_need(path, fact_of)
        if entry is not None:
            return entry.cap, entry.why
        return None, f"{parent} lets root create files: not a permission-bit problem"
    if st.kind == "link":
        return None, f"{path} is a symlink: not a permission-bit problem"
    if not dac.root_allows(st, dac.R if st.kind != "dir" else dac.R | dac.X):
        return "CAP_DAC_READ_SEARCH", f"{dac.describe(path, st)} is not readable by root " \
                                      "without it"
    if not dac.root_allows(st, dac.W):
        return "CAP_DAC_OVERRIDE", f"{dac.describe(path, st)} is not writable by root without it"
    # The file lets root in: a name made or removed next to it (a temporary, a backup link,
    # a rename over it) is what its directory's bits can refuse (haproxy's admin.sock.PID.bak).
    entry = dac.entry_need(path, fact_of)
    if entry is not None:
        return entry.cap, f"{path} lets root in, but {entry.why}"
    return None, f"{dac.describe(path, st)} lets root in by its mode bits: not a capability " \
                 "problem"


def needed_capability(dn: Denial, may_be_root: bool, have: set[str]) -> tuple[str | None, str]:
    """(capability, why) for a denial, or (None, why not)."""
    root = dn.uid == 0 if dn.uid is not None else may_be_root
    if not root:
        who = f"uid {dn.uid}" if dn.uid is not None else "the unit's user"
        return None, f"{who} is not root: a capability in the bounding set would not help"
    if dn.kind == "eperm" and dn.syscall in CHOWN_CALLS:
        return "CAP_CHOWN", f"{dn.syscall}() refused"
    if dn.kind == "eperm" and dn.syscall in KILL_CALLS:
        return "CAP_KILL", f"{dn.syscall}() refused: the target runs as another user"
    if dn.kind == "eperm" and dn.syscall in CHMOD_CALLS and dn.path:
        need = dac.owner_need(dn.path, Fact.of_host(os.path.realpath(dn.path)))
        if need is not None:
            return need.cap, need.why
        return None, f"{dn.path} is root's or gone: not an ownership problem"
    if dn.kind == "eperm" and dn.path == "/proc/kmsg":
        return "CAP_SYSLOG", "/proc/kmsg refused: opening the kernel log is syslog(2)'s open"
    if dn.kind == "eacces" and dn.path and dn.path.startswith("/") and \
            not dn.path.startswith(("/proc/", "/sys/", "/dev/")):
        cap, why = dac_capability(dn.path)
        if cap == "CAP_DAC_READ_SEARCH" and cap in have:
            return "CAP_DAC_OVERRIDE", f"{why}; still denied with {cap}"
        return cap, why
    return None, "no capability governs this denial"
