"""Parse human durations: 30s, 10m, 1h, 1h30m, 90 (seconds)."""

from __future__ import annotations

import re

from autosandbox.errors import UserError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    s = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    if not s:
        raise UserError("empty duration: use e.g. 30s, 10m, 1h")
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.end() == pos:
            raise UserError(f"bad duration {text!r}: use e.g. 30s, 10m, 1h30m")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total <= 0:
        raise UserError(f"duration must be positive: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"
