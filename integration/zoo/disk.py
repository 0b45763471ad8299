"""Owner, group and mode of every file and directory a service keeps, and the bytes of its
unit files and drop-ins: taken before autosandbox touches the unit, compared after."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# (uid, gid, st_mode) by absolute path
Snapshot = dict[str, tuple[int, int, int]]

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system",
             "/lib/systemd/system")


def snapshot(roots: list[str]) -> Snapshot:
    """Every path below each existing root (not following symlinks), the roots included."""
    out: Snapshot = {}

    def add(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        out[path] = (st.st_uid, st.st_gid, st.st_mode)

    for root in roots:
        add(root)
        if not os.path.isdir(root) or os.path.islink(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                add(os.path.join(dirpath, name))
    return out


def describe(entry: tuple[int, int, int]) -> str:
    uid, gid, mode = entry
    kind = "d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else \
        "s" if stat.S_ISSOCK(mode) else "-"
    return f"{kind} {uid}:{gid} {stat.S_IMODE(mode):04o}"


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths whose owner, group or mode changed, and directories that disappeared. Files a
    running service replaces (WAL segments, rotated logs) may come and go: new paths and
    vanished plain files are not differences."""
    out = []
    for path, was in sorted(before.items()):
        now = after.get(path)
        if now is None:
            if stat.S_ISDIR(was[2]):
                out.append(f"{path}: directory gone (was {describe(was)})")
        elif now != was:
            out.append(f"{path}: {describe(was)} -> {describe(now)}")
    return out


def unit_files(unit: str) -> dict[str, bytes]:
    """The unit's own file and every drop-in that applies to it (also its template's), by
    path: what `revert` must give back byte for byte."""
    names = [unit]
    if "@" in unit:
        names.append(unit.split("@", 1)[0] + "@.service")
    names.append("service")  # service.d/: drop-ins for every service
    out: dict[str, bytes] = {}
    for d in UNIT_DIRS:
        for name in names:
            for p in (Path(d) / name, Path(d) / (name + ".d")):
                if p.is_file():
                    out[str(p)] = p.read_bytes()
                elif p.is_dir():
                    out[str(p)] = b"<dir>"
                    for f in sorted(p.iterdir()):
                        out[str(f)] = f.read_bytes() if f.is_file() else b"<not a file>"
    return out


def unit_file_differences(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    out = []
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            out.append(f"{path}: removed")
        elif path not in before:
            out.append(f"{path}: left behind")
        elif before[path] != after[path]:
            out.append(f"{path}: content changed")
    return out
