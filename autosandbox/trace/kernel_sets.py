"""The syscall set and the capability checks the kernel granted, seen by the BPF program of
opens.py, so that no tracefs instance runs beside it.

A tracefs instance on raw_syscalls (and one on capability:cap_capable) follows its pids with
set_event_pid, which hooks every context switch on the machine, and writes each call of a
traced process to a ring buffer before its filter discards it: on nginx (7 calls a request,
keep-alive) the two cost a quarter of its rate. Here each call costs one map lookup in the
kernel; a syscall number is printed the first time a class of the program makes it (a bit in
a per-class word of 64 numbers), and granted checks are counted in a map printed at the end.

Classes (the value of @p): 1 for the sandboxed lines, 2 for `+` lines, which run outside the
sandbox. They are de-duplicated apart: what a `+` line did first must not hide the same call
of a sandboxed line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autosandbox.linux.tracefs import tracefs_root

SANDBOXED, PRIVILEGED = 1, 2
NR_MAX = 1024  # syscall numbers above are no x86_64 or arm64 call (and -1 is none)
_SYS = re.compile(r"^SYS (\d+) (\d+)$")
_CAPN = re.compile(r"^@capn\[(\d+), (\d+)\]: (\d+)$")
CAP_EVENT = "events/capability/cap_capable"


@dataclass(frozen=True, slots=True)
class SyscallRecord:
    tid: int
    nr: int


def caps_available() -> bool:
    root = tracefs_root()
    return root is not None and (root / CAP_EVENT).is_dir()


def script() -> str:
    """Probes added to opens.script(): only threads of the program (@p, holding the class)."""
    out = [
        # No predicate: the lookup of @p is the only cost for every other process's calls.
        "tracepoint:raw_syscalls:sys_enter { $c = @p[tid];\n"
        f"  if ($c) {{ $nr = args->id; if ($nr >= 0 && $nr < {NR_MAX}) {{\n"
        "    $k = (uint64)$nr >> 6; $b = (uint64)1 << ((uint64)$nr & 63); $w = @sc[$c, $k];\n"
        '    if (($w & $b) == 0) { @sc[$c, $k] = $w | $b; printf("SYS %d %d\\n", tid, $nr); }'
        "\n  } }\n}\n"]
    if caps_available():
        # Granted checks in the user namespace the class started in: a namespace the program
        # made itself gives it every capability there whatever the unit's bounding set.
        out.append(
            "tracepoint:capability:cap_capable /@p[tid]/ { $r = args->ret; $cr = args->cred;\n"
            "  $cap = args->cap; $c = @p[tid];\n"
            "  if ($r == 0 && (uint64)$cr->user_ns == @ns[$c]) {"
            " @capn[$c, $cap] = @capn[$c, $cap] + 1; }\n}\n")
    return "".join(out)


def exec_marks() -> str:
    """Statements of the probe where strace executes the program (class $c known)."""
    return "@ns[$c] = (uint64)curtask->cred->user_ns;"


def end() -> str:
    """END: the counts are printed (parsed by `parse_count`), every map cleared."""
    caps = "print(@capn); clear(@capn); " if caps_available() else ""
    return f"{caps}clear(@sc); clear(@ns);"


def parse(line: str) -> SyscallRecord | None:
    m = _SYS.match(line)
    return None if m is None else SyscallRecord(int(m.group(1)), int(m.group(2)))


def parse_count(line: str) -> tuple[int, int, int] | None:
    """(class, capability number, granted checks) of a line of END's print(@capn)."""
    m = _CAPN.match(line)
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))
