"""The service's own log files are read for denials in each trial (validate/service_logs.py):
only what the trial appended, rotation included; lines recorded from squid in the container."""

from __future__ import annotations

import os
from pathlib import Path

from autosandbox.validate.denials import parse_denials
from autosandbox.validate.service_logs import LogWatch

SQUID = ("2026/12/05 08:50:26| Open  icmp_sock: (1) Operation not permitted\n"
         "2026/12/05 08:50:26| FATAL: pinger: Unable to open any ICMP sockets.\n")


def test_what_a_trial_appended_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "cache.log"
    log.write_text("2026/12/05 08:40:00| old: Permission denied /var/x\n")
    other = tmp_path / "data.db"  # written, but not a log
    other.write_text("Permission denied")
    watch = LogWatch([str(log), str(other), "/var/log/none/missing.log"])
    assert str(other) not in watch.paths
    marks = watch.mark()
    with log.open("a") as f:
        f.write(SQUID)
    got = watch.appended(marks)
    assert got == {str(log): SQUID.splitlines()}
    denials = parse_denials(got[str(log)], "log")
    assert [(d.kind, d.source) for d in denials] == [("eperm", "log")]


def test_a_rotated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("x" * 1000 + "\n")
    watch = LogWatch([str(log)])
    marks = watch.mark()
    os.rename(log, tmp_path / "error.log.1")
    log.write_text("open() failed (30: Read-only file system)\n")
    assert watch.appended(marks) == {str(log): ["open() failed (30: Read-only file system)"]}
