"""Calls a seccomp filter killed, from audit records recorded in the VM (a trial of
integration/test_vm_learn.py: as-pyapp without @network-io, killed at socket())."""

from __future__ import annotations

from pathlib import Path

from autosandbox.linux.audit import parse_seccomp
from autosandbox.linux.syscalls import syscall_names

RECORDED = (Path(__file__).parent / "data" / "seccomp.audit").read_text()


def test_killed_calls_are_named_and_timed() -> None:
    names = syscall_names()
    assert names is not None
    kills = parse_seccomp(RECORDED, 0, names)
    assert [(k.syscall, k.exe) for k in kills] == [("socket", "/usr/bin/python3.11")] * 4
    assert len({k.pid for k in kills}) == 4  # Restart=on-failure: a new process each time


def test_records_before_the_trial_are_ignored() -> None:
    names = syscall_names() or {}
    assert len(parse_seccomp(RECORDED, 1795944998.0, names)) == 2
    assert parse_seccomp(RECORDED, 1795945000.0, names) == []


def test_other_architectures_and_records_are_skipped() -> None:
    names = syscall_names() or {}
    i386 = RECORDED.splitlines()[0].replace("arch=c000003e", "arch=40000003")
    syscall_record = "type=SYSCALL msg=audit(1795944999.1:1): arch=c000003e syscall=41 pid=9"
    assert parse_seccomp(f"{i386}\n{syscall_record}\n", 0, names) == []
