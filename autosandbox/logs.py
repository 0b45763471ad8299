"""What -v shows: each external command, each systemd job and each restore step, with the
seconds since start, on stderr. Without -v only warnings are shown (a rule that could not be
removed, say), each as one line."""

from __future__ import annotations

import logging
import sys

ROOT = "autosandbox"


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().replace("\n", " ")
        if record.levelno >= logging.WARNING:
            return f"autosandbox: warning: {text}"
        return f"autosandbox: {record.relativeCreated / 1000:8.3f} {text}"


def configure(verbose: bool) -> None:
    """Send autosandbox's log to stderr: everything with `verbose`, else warnings only."""
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
