"""The capability checks the kernel granted, seen by the BPF program of opens.py, and the
classes of line every de-duplication of that program keeps apart.

A tracefs instance on capability:cap_capable followed every process of a unit's machine (its
pids are not known in advance) and printed each check to a ring buffer; here a check costs a
map lookup unless it is the program's, and granted ones are counted in a map printed at the end.

Classes (the value of @p): 1 for the sandboxed lines, 2 for `+` lines, which run outside the
sandbox. They are de-duplicated apart: what a `+` line did first must not hide the same open,
call or capability of a sandboxed line.
"""

from __future__ import annotations

import re

from autosandbox.linux.tracefs import tracefs_root
from autosandbox.trace.tracefs import EVENT as CAP_EVENT  # one name for the tracepoint

SANDBOXED, PRIVILEGED = 1, 2
_CAPN = re.compile(r"^@capn\[(\d+), (\d+)\]: (\d+)$")


def caps_available() -> bool:
    root = tracefs_root()
    return root is not None and (root / CAP_EVENT).is_dir()


def script() -> str:
    """Probes added to opens.script(): only threads of the program (@p, holding the class)."""
    if not caps_available():
        return ""
    # Granted checks in the user namespace the class started in: a namespace the program made
    # itself gives it every capability there, whatever the unit's bounding set.
    return ("tracepoint:capability:cap_capable /@p[tid]/ { $r = args->ret; $cr = args->cred;\n"
            "  $cap = args->cap; $c = @p[tid];\n"
            "  if ($r == 0 && (uint64)$cr->user_ns == @ns[$c]) {"
            " @capn[$c, $cap] = @capn[$c, $cap] + 1; }\n}\n")


def exec_marks() -> str:
    """Statements of the probe where strace executes the program (class $c known)."""
    return "@ns[$c] = (uint64)curtask->cred->user_ns;"


def end() -> str:
    """END: the counts are printed (parsed by `parse_count`), every map cleared."""
    caps = "print(@capn); clear(@capn); " if caps_available() else ""
    return f"{caps}clear(@ns);"


def parse_count(line: str) -> tuple[int, int, int] | None:
    """(class, capability number, granted checks) of a line of END's print(@capn)."""
    m = _CAPN.match(line)
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))
