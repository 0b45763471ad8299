"""The host's mount points, from /proc/self/mountinfo (proc(5)): recorded when tracing ends,
so that synthesis knows which separate file systems ProtectSystem=strict has to cover."""

from __future__ import annotations

import contextlib
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


def parse_mountinfo(text: str) -> dict[str, str]:
    """mount point -> file system type, the last mount of each point (the visible one)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        sep = fields.index("-")
        if sep + 1 < len(fields):
            out[_unescape(fields[4])] = fields[sep + 1]
    return out


def host_mounts() -> dict[str, str]:
    with contextlib.suppress(OSError):
        return parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return {}
