"""System call numbers of this machine's architecture (tracefs and audit report numbers)."""

from __future__ import annotations

import os
from pathlib import Path

# What the kernel runs to resume a call that a stop interrupted: a tracer's own ptrace stops
# make it appear, so it says nothing about the program (and @default always allows it).
NOT_CALLS = frozenset({"restart_syscall"})


def syscall_names() -> dict[int, str] | None:
    """Syscall numbers of this machine's architecture; None where we ship no table."""
    if os.uname().machine != "x86_64":
        return None
    table = Path(__file__).with_name("syscalls_x86_64.tsv")
    out: dict[int, str] = {}
    for line in table.read_text().splitlines():
        if line and not line.startswith("#"):
            nr, name = line.split("\t")
            out[int(nr)] = name
    return out
