"""ProgressLine as the one Reporter: progress is throttled off a terminal, events never are."""

from __future__ import annotations

import io

from autosandbox.report import NullReporter, ProgressLine, Reporter
from autosandbox.trace.command import Progress

PROGRESS = Progress(5.0, 60.0, 12, 3, ["AF_INET"], ["CAP_CHOWN"], "running")
LINE = "learning 5s/1m00s (55s left)  events 12  paths 3  families INET  caps CHOWN  unit running\n"


def _report(reporter: Reporter) -> None:
    reporter.progress(PROGRESS)
    reporter.event("trial 1 (the unit as found, no sandbox): healthy")
    reporter.progress(PROGRESS)  # within `every` of the first: not shown off a terminal
    reporter.event("trial 2 (candidate): healthy")
    reporter.done()


def test_progress_line_off_a_terminal() -> None:
    out = io.StringIO()
    _report(ProgressLine(out, every=3600.0))
    assert out.getvalue() == (LINE + "trial 1 (the unit as found, no sandbox): healthy\n"
                              "trial 2 (candidate): healthy\n")


def test_progress_line_every_zero_shows_each_progress() -> None:
    out = io.StringIO()
    line = ProgressLine(out, every=0.0)
    line.progress(PROGRESS)
    line.progress(PROGRESS)
    line.done()
    assert out.getvalue() == LINE * 2


class _Terminal(io.StringIO):
    """A stream that says it is a terminal: the status line rewrites itself."""

    def isatty(self) -> bool:
        return True


def test_event_ends_the_status_line_on_a_terminal() -> None:
    out = _Terminal()
    _report(ProgressLine(out, every=3600.0))
    text = LINE.rstrip("\n")
    assert out.getvalue() == ("\r" + text + "\ntrial 1 (the unit as found, no sandbox): healthy\n"
                              "\r" + text + "\ntrial 2 (candidate): healthy\n")


def test_disabled_and_null_reporters_write_nothing() -> None:
    out = io.StringIO()
    _report(ProgressLine(out, enabled=False))
    _report(NullReporter())
    assert out.getvalue() == ""


def test_events_show_a_services_escape_sequences_instead_of_sending_them() -> None:
    """A health check's output or a log line in an event comes from the traced service."""
    out = _Terminal()
    ProgressLine(out).event("  log: \x1b]0;owned\x07\x1b[2Jcleared\r\u202egnp.exe")
    assert out.getvalue() == "  log: \\x1b]0;owned\\x07\\x1b[2Jcleared\\r\\u202egnp.exe\n"
