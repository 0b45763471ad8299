"""The service's own log files, read for denials in each trial besides the journal.

Many daemons log to files, not to the journal: squid's pinger under the applied sandbox
wrote "Open icmp_sock: (1) Operation not permitted" and "FATAL: pinger" to
/var/log/squid/cache.log while the journal and the health check saw nothing. The files are
those the trace saw the service write, below /var/log or named *.log."""

from __future__ import annotations

import os
from collections.abc import Sequence

from autosandbox.linux.files import read_regular

MAX_FILES = 32
MAX_READ = 256 * 1024  # what one trial appended to one file, at most


def _is_log(path: str) -> bool:
    return path.startswith("/var/log/") or path.endswith(".log")


class LogWatch:
    def __init__(self, written: Sequence[str]) -> None:
        self.paths = sorted(p for p in set(written) if _is_log(p))[:MAX_FILES]

    def mark(self) -> dict[str, int]:
        """Where each file ends now (a file that does not exist yet starts at 0)."""
        marks = {}
        for path in self.paths:
            try:
                marks[path] = os.lstat(path).st_size
            except OSError:
                marks[path] = 0
        return marks

    def appended(self, marks: dict[str, int]) -> dict[str, list[str]]:
        """The lines each file got since `marks`; a file that shrank was rotated or
        truncated, and is read from its start."""
        out: dict[str, list[str]] = {}
        for path, start in marks.items():
            # the service's own file: a FIFO, a device or a symlink put there is not read
            data = read_regular(path, MAX_READ, start, follow=False)
            lines = (data or b"").decode("utf-8", errors="replace").splitlines()
            if lines:
                out[path] = lines
        return out
