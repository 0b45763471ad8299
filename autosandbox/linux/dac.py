"""The kernel's discretionary access check (generic_permission) for a root process, from owner,
group and mode bits: which capability root needed for an access the bits alone refuse.

One model for learning (what root wrote, against the host facts recorded at trace time:
trace/dac.py) and for validation (a denial against the host now: validate/capneed.py).
Root here is fsuid 0 with fsgid 0 and no supplementary groups (a unit without User=).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from autosandbox.profile import Fact

R, W, X = 4, 2, 1
def root_allows(f: Fact, want: int) -> bool:
    """Would the mode bits alone let uid 0 / gid 0 (no capability) do `want`?"""
    if f.uid == 0:
        bits = f.mode >> 6
    elif f.gid == 0:
        bits = f.mode >> 3
    else:
        bits = f.mode
    return bits & 7 & want == want


def describe(path: str, f: Fact) -> str:
    return f"{path} (uid {f.uid}, gid {f.gid}, mode {f.mode:04o})"


@dataclass(frozen=True)
class Need:
    cap: str
    why: str


def ancestors(path: str) -> Iterator[str]:
    """"/", "/a", "/a/b" for "/a/b/c": the directories a lookup of `path` searches."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i]) or "/"


def search_need(path: str, fact_of: Callable[[str], Fact | None]) -> Need | None:
    """CAP_DAC_READ_SEARCH when a directory on the way to `path` is not searchable by root."""
    for d in ancestors(path):
        f = fact_of(d)
        if f is not None and f.kind == "dir" and not root_allows(f, X):
            return Need("CAP_DAC_READ_SEARCH", f"{describe(d, f)} is not searchable by root "
                                               "without it")
    return None


def entry_need(path: str, fact_of: Callable[[str], Fact | None]) -> Need | None:
    """CAP_DAC_OVERRIDE when making or removing `path` needs a write its directory's bits
    refuse root."""
    parent = os.path.dirname(path) or "/"
    f = fact_of(parent)
    if f is None or f.kind != "dir" or root_allows(f, W | X):
        return None
    return Need("CAP_DAC_OVERRIDE", f"an entry made or removed in {describe(parent, f)}, "
                                    "which root cannot write by its mode bits")


def owner_of(path: str) -> int | None:
    """The owner of `path` on the host now (not followed: the caller resolved it)."""
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


def owner_need(path: str, f: Fact | None) -> Need | None:
    """CAP_FOWNER when root changes the mode of a file it does not own: chmod is the owner's
    act (inode_owner_or_capable), whatever the mode bits (exim's root delivery process chmods
    the message logs it gave to Debian-exim)."""
    if f is None or f.kind == "missing" or f.uid == 0:
        return None
    return Need("CAP_FOWNER", f"{describe(path, f)} is not root's: only its owner may change "
                              "its mode")
