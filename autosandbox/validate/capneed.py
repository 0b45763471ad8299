"""Which capability a denial shows the service needed, from evidence only.

A denial names a capability only when the kernel's check for that capability is what failed:
the process could have held it (it runs as root), and the call is one the capability governs.
An EACCES on a file whose mode bits let root in, or any denial of a process that runs as
another user, is an ownership or configuration problem: no capability would fix it, and none
is added (the trial log says why).
"""

from __future__ import annotations

import os
import stat

from autosandbox.validate.denials import Denial

CHOWN_CALLS = frozenset({"chown", "fchown", "lchown", "fchownat"})
KILL_CALLS = frozenset({"kill", "tkill", "tgkill", "rt_sigqueueinfo", "pidfd_send_signal"})
R, W, X = 4, 2, 1


def _allows(st: os.stat_result, want: int) -> bool:
    """Would the mode bits alone let uid 0 / gid 0 (no capability) do `want`?"""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == 0:
        bits = mode >> 6
    elif st.st_gid == 0:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def dac_capability(path: str) -> tuple[str | None, str]:
    """The capability root lacks for `path` (CAP_DAC_READ_SEARCH when a search or read is what
    the bits refuse, CAP_DAC_OVERRIDE when only a write is), or None and why not."""
    parent = os.path.dirname(path) or "/"
    parts = parent.split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i]) or "/"
        try:
            st = os.stat(d)
        except OSError:
            return None, f"{d} cannot be looked at"
        if not _allows(st, X):
            return "CAP_DAC_READ_SEARCH", f"{d} is not searchable by root without it"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            pst = os.stat(parent)
        except OSError:
            return None, f"{parent} cannot be looked at"
        if not _allows(pst, W | X):
            return "CAP_DAC_OVERRIDE", f"creating in {parent} (mode {stat.S_IMODE(pst.st_mode):o})"
        return None, f"{parent} lets root create files: not a permission-bit problem"
    except OSError:
        return None, f"{path} cannot be looked at"
    mode = f"{stat.S_IMODE(st.st_mode):04o} uid {st.st_uid} gid {st.st_gid}"
    if not _allows(st, R if not stat.S_ISDIR(st.st_mode) else R | X):
        return "CAP_DAC_READ_SEARCH", f"{path} ({mode}) is not readable by root without it"
    if not _allows(st, W):
        return "CAP_DAC_OVERRIDE", f"{path} ({mode}) is not writable by root without it"
    return None, f"{path} ({mode}) lets root in by its mode bits: not a capability problem"


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
    if dn.kind == "eacces" and dn.path and dn.path.startswith("/") and \
            not dn.path.startswith(("/proc/", "/sys/", "/dev/")):
        cap, why = dac_capability(dn.path)
        if cap == "CAP_DAC_READ_SEARCH" and cap in have:
            return "CAP_DAC_OVERRIDE", f"{why}; still denied with {cap}"
        return cap, why
    return None, "no capability governs this denial"
