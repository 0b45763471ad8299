"""The host's mount points, from /proc/self/mountinfo (proc(5)): recorded when tracing ends,
so that synthesis knows which separate file systems ProtectSystem=strict has to cover."""

from __future__ import annotations

import contextlib
import os
import select
import threading
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


class _MountTable:
    """mount point -> superblock device, read again only when the mount table changed: an
    open /proc/self/mountinfo reports each change to poll() (proc(5)). A timed cache (once a
    second, before) missed a mount made just before a trace: its relative opens were dropped."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.poller = select.poll()
        self.table: dict[str, int] = {}
        self.lock = threading.Lock()  # the recorder's threads share one offset of the file

    def get(self) -> dict[str, int]:
        with self.lock:
            return self._get()

    def _get(self) -> dict[str, int]:
        if self.fd is None:
            self.fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            self.poller.register(self.fd, select.POLLPRI | select.POLLERR)
            self.poller.poll(0)  # the first poll reports the table as changed: this read
        elif not self.poller.poll(0):
            return self.table
        os.lseek(self.fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self.fd, 65536):
            chunks.append(chunk)
        self.table = mount_devices(b"".join(chunks).decode("utf-8", "surrogateescape"))
        return self.table


_devices = _MountTable()


def superblock_device(path: str) -> int | None:
    """The superblock device of the mount `path` (resolved) is on."""
    try:
        table = _devices.get()
    except OSError:
        return None
    probe = os.path.realpath(path)
    while probe not in table:
        if probe == "/":
            return None
        probe = os.path.dirname(probe)
    return table[probe]
