"""Parse human durations: 30s, 10m, 1h, 1h30m, 90 (seconds)."""

from __future__ import annotations

import re

from autosandbox.errors import UserError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

# Bounds, so that a typo is refused before anything starts rather than found out later.
# A trace shorter than 1 s sees only the tracers' own start-up (under load strace may not
# even reach the program); 31 days covers monthly jobs, longer is surely a typo.
TRACE_BOUNDS = (1.0, 31 * 86400.0)
# A service must stay up at least 1 s to tell a crash loop (RestartSec= is 100 ms by default)
# from a healthy start; an hour per trial, times --max-trials, is already days.
SETTLE_BOUNDS = (1.0, 3600.0)


def parse_duration(text: str, what: str = "duration",
                   bounds: tuple[float, float] | None = None) -> float:
    """Seconds in `text`; `bounds` (inclusive) refuse what is too short or too long."""
    s = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    if not s:
        raise UserError(f"empty {what}: use e.g. 30s, 10m, 1h")
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.end() == pos:
            raise UserError(f"bad duration {text!r}: use e.g. 30s, 10m, 1h30m")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total <= 0:
        raise UserError(f"{what} must be positive: {text!r}")
    if bounds is not None and not bounds[0] <= total <= bounds[1]:
        raise UserError(f"{what} {text!r} is out of range: from {format_duration(bounds[0])} "
                        f"to {format_duration(bounds[1])}")
    return total


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m{s:02d}s"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"
