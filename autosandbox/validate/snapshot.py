"""What is on disk around a service, before and after we touch it: owner, group, mode, ACLs and
existence of the unit's directories, the paths it writes and their parents.

A sandbox directive can reach the disk (StateDirectory= chowns, RuntimeDirectory= removes at
stop, UMask= changes the modes of rewritten files). A candidate that changed something fails;
what we changed is put back (owner, group, mode, ACL), nothing is ever created or deleted.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autosandbox import unitfile
from autosandbox.systemd import runstate

ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
MAX_PATHS = 4000
MAX_CHILDREN = 200  # direct entries looked at below each writable directory
# Where systemd creates the unit's own directories.
DIRECTORY_BASES = {"StateDirectory": "/var/lib", "LogsDirectory": "/var/log",
                   "CacheDirectory": "/var/cache", "RuntimeDirectory": "/run",
                   "ConfigurationDirectory": "/etc"}


@dataclass(frozen=True)
class Entry:
    kind: str  # dir, file, link, other, missing
    uid: int = -1
    gid: int = -1
    mode: int = 0
    acl: tuple[tuple[str, bytes], ...] = ()
    # which file it was: what is put back must be that very file, not whatever the path leads
    # to by then (the service may have put a symlink or a hard link there: /etc/passwd)
    dev: int = field(default=-1, compare=False)
    ino: int = field(default=-1, compare=False)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def entry(path: str) -> Entry:
    try:
        st = os.lstat(path)
    except OSError:
        return Entry("missing")
    kind = _kind(st.st_mode)
    acl: list[tuple[str, bytes]] = []
    if kind in ("dir", "file"):
        for name in ACL_XATTRS:
            with contextlib.suppress(OSError):
                acl.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return Entry(kind, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), tuple(acl), st.st_dev,
                 st.st_ino)


def _who(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


@dataclass(frozen=True)
class Change:
    path: str
    before: Entry
    after: Entry

    def line(self) -> str:
        b, a = self.before, self.after
        shown = repr(self.path) if not self.path.isprintable() else self.path
        if b.kind != a.kind:
            what = ("removed" if a.kind == "missing" else "created" if b.kind == "missing"
                    else f"{b.kind} -> {a.kind}")
            return f"{shown}: {what}"
        parts = []
        if (b.uid, b.gid) != (a.uid, a.gid):
            parts.append(f"owner {_who(b.uid, b.gid)} -> {_who(a.uid, a.gid)}")
        if b.mode != a.mode:
            parts.append(f"mode {b.mode:04o} -> {a.mode:04o}")
        if b.acl != a.acl:
            parts.append("ACL " + ("changed" if b.acl and a.acl else
                                   "removed" if b.acl else "added"))
        return f"{shown}: {', '.join(parts)}"


@dataclass
class Snapshot:
    entries: dict[str, Entry] = field(default_factory=dict)
    kept: Path | None = field(default=None, compare=False)  # in the run's record (reset)

    @classmethod
    def take(cls, paths: Iterable[str]) -> Snapshot:
        return cls({p: entry(p) for p in sorted(set(paths))[:MAX_PATHS]})

    def again(self) -> Snapshot:
        return Snapshot.take(self.entries)

    def changes(self, later: Snapshot, ignore: frozenset[str] = frozenset()) -> list[Change]:
        return [Change(p, e, later.entries[p]) for p, e in self.entries.items()
                if p not in ignore and p in later.entries and later.entries[p] != e]

    def changes_beyond(self, later: Snapshot, own: dict[str, Entry]) -> list[Change]:
        """What changed but the unit's own doing: `own` is how the unit as found left the
        paths it changes itself (the baseline trial). Only that very outcome is excused, and
        anything else on such a path is shown against it: a pid file the stock unit recreates
        does not hide the mode a candidate's UMask= gives it."""
        return [Change(c.path, own[c.path], c.after) if c.path in own else c
                for c in self.changes(later) if own.get(c.path) != c.after]

    def keep_for_reset(self, unit: str, ignore: frozenset[str] = frozenset()) -> None:
        """Into the current run's record (again, with `ignore` once known): a run killed
        before it put the disk back leaves it to `reset`."""
        scratch = runstate.scratch_dir()
        if scratch is None:
            return
        kept = scratch / f"disk-{unit}.json"
        if self.kept != kept:
            self.kept = kept
            runstate.record("disk", unit=unit, path=str(kept))
        self.save(kept, ignore)

    def save(self, path: str | Path, ignore: frozenset[str] = frozenset()) -> None:
        """Kept for `reset` after a kill (root-only, replaced whole: never half written)."""
        data = {p: [e.kind, e.uid, e.gid, e.mode, [[n, v.hex()] for n, v in e.acl], e.dev,
                    e.ino] for p, e in self.entries.items() if p not in ignore}
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls({p: Entry(str(k), int(u), int(g), int(m),
                             tuple((str(n), bytes.fromhex(v)) for n, v in acl), int(d), int(i))
                    for p, (k, u, g, m, acl, d, i) in data.items()})


def restore(changes: Iterable[Change]) -> list[str]:
    """Put back owner, group, mode and ACLs of paths that still exist as the same kind of
    file; never create or remove anything. Returns what could not be put back."""
    failed = []
    for c in changes:
        b, a = c.before, c.after
        if b.kind != a.kind or b.kind not in ("dir", "file"):
            failed.append(f"{c.path}: not restored ({c.line().split(': ', 1)[1]})")
            continue
        try:
            # O_PATH: a device or FIFO put there is never opened for real
            fd = os.open(c.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            failed.append(f"{c.path}: not restored ({exc.strerror})")
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (b.dev, b.ino) or _kind(st.st_mode) != b.kind:
                failed.append(f"{c.path}: not restored (not the file that was there: "
                              "replaced, or a link put in its path)")
                continue
            this = f"/proc/self/fd/{fd}"  # that very inode, whatever its path is by now
            if (a.uid, a.gid) != (b.uid, b.gid):
                os.chown(this, b.uid, b.gid)
            os.chmod(this, b.mode)  # after chown: it clears setuid/setgid bits
            for name in ACL_XATTRS:
                old = dict(b.acl).get(name)
                if old is not None:
                    os.setxattr(this, name, old)
                elif name in dict(a.acl):
                    os.removexattr(this, name)
        except OSError as exc:
            failed.append(f"{c.path}: not restored ({exc.strerror})")
        finally:
            os.close(fd)
    return failed


def _children(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.path for _, e in zip(range(MAX_CHILDREN), it, strict=False)]
    except OSError:
        return []


def directories_of(settings: dict[str, list[str]]) -> list[str]:
    """Absolute paths of the directories these settings make systemd manage or writable
    (values as written: quoted, `-` prefixed)."""
    out = []
    for key, values in settings.items():
        for raw in values:
            words = unitfile.split_words(raw)
            for w in words:
                if key == "ReadWritePaths" and w.lstrip("-+").startswith("/"):
                    out.append(w.lstrip("-+"))
                elif key in DIRECTORY_BASES and w and not w.startswith("/"):
                    name = w.split(":", 1)[0]
                    out.append(f"{DIRECTORY_BASES[key]}/{name}")
                    if key != "RuntimeDirectory":  # DynamicUser= keeps them below private/
                        out.append(f"{DIRECTORY_BASES[key]}/private/{name}")
    return out


def paths_to_watch(directories: Iterable[str], written: Iterable[str] = ()) -> list[str]:
    """Each directory, its parent and its direct entries; each written path and its parent."""
    out: set[str] = set()
    for d in directories:
        d = os.path.normpath(d)
        out |= {d, os.path.dirname(d), *_children(d)}
    for p in written:
        if p.startswith("/"):
            p = os.path.normpath(p)
            out |= {p, os.path.dirname(p)}
    out.discard("/")
    return sorted(out)
