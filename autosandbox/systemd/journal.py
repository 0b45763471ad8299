"""A unit's journal since a point in time: what trials read denials from, and what says why
a unit failed to start."""

from __future__ import annotations

import contextlib
import re
import shutil

from autosandbox import commands
from autosandbox.systemd.manager import current_scope

# systemd's own lines about a start that failed before or at exec (systemd 252's wording)
_WHY = re.compile(r"Failed at step \w+|Failed to (?:locate|execute|set up|spawn|determine)|"
                  r"Main process exited, code=|status=\d+/[A-Z_]+", re.I)


def journal_cursor() -> str | None:
    if shutil.which("journalctl") is None:
        return None
    cp = commands.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager", "-q"],
                      check=False)
    m = re.search(r"-- cursor: (\S+)", cp.stdout)
    return m.group(1) if m else None


def journal_lines(unit: str, cursor: str | None) -> list[str]:
    if shutil.which("journalctl") is None:
        return []
    # journald reads a service's stdout/stderr streams on its own time: a unit that failed at
    # start had its error line still queued when it was read at once (haproxy's first failed
    # candidate showed no denial). --sync returns once what was queued before it is written.
    with contextlib.suppress(commands.ToolTimeout):
        commands.run(["journalctl", "--sync"], check=False, timeout=30)
    args = ["journalctl", *current_scope().journal_match(unit), "-o", "cat", "--no-pager",
            "-q"]
    args += [f"--after-cursor={cursor}"] if cursor else ["-n", "200"]
    return commands.run(args, check=False).stdout.splitlines()


def run_lines(invocation: str) -> list[str]:
    """The lines of one run of a unit (its InvocationID: what it logs as found, not what
    earlier candidates made it log), at most the last 1,000."""
    if shutil.which("journalctl") is None or not re.fullmatch(r"[0-9a-f]{32}", invocation):
        return []
    with contextlib.suppress(commands.ToolTimeout):
        commands.run(["journalctl", "--sync"], check=False, timeout=30)
    return commands.run(["journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat",
                         "--no-pager", "-q", "-n", "1000"], check=False).stdout.splitlines()


def why_it_failed(lines: list[str]) -> str | None:
    """The first line of systemd's own account of a failed start (e.g. "Failed to locate
    executable /bin/sh: Permission denied"), else the service's last line."""
    for line in lines:
        if _WHY.search(line):
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else None
