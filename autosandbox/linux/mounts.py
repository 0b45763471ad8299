"""The host's mount points, from /proc/self/mountinfo (proc(5)): recorded when tracing ends,
so that synthesis knows which separate file systems ProtectSystem=strict has to cover."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _entries(text: str) -> Iterator[tuple[str, str, str]]:
    """(mount point, MAJOR:MINOR of its superblock, file system type) of each mountinfo line."""
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        sep = fields.index("-")
        if sep + 1 < len(fields):
            yield _unescape(fields[4]), fields[2], fields[sep + 1]


def parse_mountinfo(text: str) -> dict[str, str]:
    """mount point -> file system type, the last mount of each point (the visible one)."""
    return {point: fstype for point, _, fstype in _entries(text)}


def volatile(path: str, mounts: dict[str, str]) -> bool:
    """Whether `path` (resolved) is on a file system emptied at every boot: /run (systemd's
    tmpfs on every host it boots), or a tmpfs or ramfs mount among `mounts` (point -> type)."""
    if path == "/run" or path.startswith("/run/"):
        return True
    points = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
    return bool(points) and mounts[max(points, key=len)] in ("tmpfs", "ramfs")


def host_mounts() -> dict[str, str]:
    with contextlib.suppress(OSError):
        return parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return {}


def mount_devices(text: str) -> dict[str, int]:
    """mount point -> the device of its superblock (the kernel's s_dev, field 3 of mountinfo),
    the last mount of each point. stat(2) may show another device: a btrfs subvolume's own."""
    out: dict[str, int] = {}
    for point, dev, _ in _entries(text):
        major, _, minor = dev.partition(":")
        if major.isdigit() and minor.isdigit():
            out[point] = os.makedev(int(major), int(minor))
    return out


_devices: tuple[float, dict[str, int]] = (float("-inf"), {})


def superblock_device(path: str) -> int | None:
    """The superblock device of the mount `path` (resolved) is on. mountinfo is read again at
    most once a second: a mount made during a trace is found."""
    global _devices
    at, table = _devices
    now = time.monotonic()
    if now - at > 1.0:
        try:
            table = mount_devices(Path("/proc/self/mountinfo").read_text())
        except OSError:
            return None
        _devices = (now, table)
    probe = os.path.realpath(path)
    while probe not in table:
        if probe == "/":
            return None
        probe = os.path.dirname(probe)
    return table[probe]
