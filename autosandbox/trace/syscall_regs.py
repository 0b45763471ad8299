"""Where the BPF program's exit probes (opens.py, kernel.py) read a call's arguments: from the
registers the kernel saved at the call's entry (x86-64 pt_regs at the top of the task's stack,
found once at the start: opens._mark_probe), never from an entry probe.

An entry probe costs twice: a map hands its arguments to the exit probe (an open cost twice as
much so), and any `sys_enter_*` probe hooks the entry of every call of every process on the
machine (perf_syscall_enter: 148 -> 168 ns a read(2) here, `/dev/zero` one byte at a time),
whichever call it is for. Exit probes alone cost a process nothing on the calls they are not on.
"""

from __future__ import annotations

# x86-64 syscall numbers of the calls the exit probes read
NR: dict[str, int] = {
    "open": 2, "openat": 257, "accept": 43, "accept4": 288, "setsockopt": 54, "bind": 49,
    "connect": 42, "fcntl": 72, "mmap": 9, "mprotect": 10, "pkey_mprotect": 329,
    "getpgid": 121,
}
_ARGS = ("di", "si", "dx", "r10", "r8", "r9")  # the syscall ABI's argument registers, in order
# This task's saved registers (@regoff: their offset from the stack's base, found at the start)
LOAD = "$regs = (struct pt_regs *)((uint64)curtask->stack + @regoff);"


def arg(n: int) -> str:
    """The expression of the call's argument `n` (from 0), as the unsigned 64-bit register."""
    return f"$regs->{_ARGS[n]}"


def leave_unless(call: str) -> str:
    """Leave the probe (a NOARGS line, counted) unless $regs are this call's: then nothing of
    it is read, rather than another call's arguments."""
    return f'if ($regs->orig_ax != {NR[call]}) {{ printf("NOARGS %d\\n", tid); return; }}'


def load_or_leave(call: str) -> str:
    """Statements: $regs, and leave_unless(call)."""
    return f"{LOAD}\n  {leave_unless(call)}"
