"""The BPF program de-duplicates per class: a unit's `+` lines (outside the sandbox) apart from
its sandboxed lines. Seen: with one map for all, an ExecStartPre=+ line that wrote a file, made
a call or passed a capability check first hid the same from the sandboxed ExecStart=, whose
profile then missed it (ReadWritePaths=, SystemCallFilter= or CapabilityBoundingSet= too tight).
Here the shims of the two kinds of line (gate.shim_script) join through their gates, no systemd."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from autosandbox.linux.syscalls import syscall_names
from autosandbox.trace import kernel_sets, opens
from autosandbox.trace.gate import GateServer, shim_script
from autosandbox.trace.kernel_sets import PRIVILEGED, SANDBOXED, SyscallRecord
from autosandbox.trace.opens import OpenRecord, OpenTracer

from .conftest import PYTHON

PROGRAM = ("import os, sys\nprint(os.getpid(), flush=True)\n"
           "open(sys.argv[1], 'w').write('x')\n"
           "os.setgroups(os.getgroups())\n")  # as root: a check the kernel grants


@pytest.mark.skipif(not opens.available() or shutil.which("strace") is None,
                    reason="needs root, bpftrace, strace and the syscall tracepoints of the host")
def test_a_privileged_line_hides_nothing_of_the_sandboxed_lines(tmp_path: Path) -> None:
    gate = Path(tempfile.mkdtemp(prefix="g-", dir="/tmp"))
    target = tmp_path / "shared.txt"
    try:
        tracer = OpenTracer(gate_prefix=f"{gate}/gate-")
        pids = []
        # every announcement believed (no control group): the shells alone are tested
        gates = GateServer(gate, 2, lambda *_: None, cgroup=None)
        try:
            # the `+` line first, then a sandboxed line twice: as ExecStartPre=+, ExecStart=
            for i, privileged in ((1, True), (0, False), (0, False)):
                script = shim_script(gates.control, gates.gates[i], i, privileged)
                out = subprocess.run(
                    ["/bin/sh", "-c", script, "shim", "strace", "-f", "-o", "/dev/null",
                     "--", PYTHON, "-c", PROGRAM, str(target)],
                    stdout=subprocess.PIPE, text=True, check=True, timeout=60).stdout
                pids.append(int(out.split()[0]))
            # every CPU's records printed (close() waits so too: stopped before, bpftrace drops
            # what it has not read)
            assert tracer.flush()
        finally:
            tracer.close()
            gates.close()
        plus, first, second = pids
        writes = {r.tid for r in tracer.records if isinstance(r, OpenRecord)
                  and r.path == str(target) and r.flags & opens.O_WRONLY}
        # once per class: the sandboxed line's write is not hidden by the `+` line's, and
        # the second sandboxed run's is (the same class reported it)
        assert writes == {plus, first}, (writes, pids)
        names = syscall_names() or {}
        calls: dict[int, set[str]] = {}
        for r in tracer.records:
            if isinstance(r, SyscallRecord):
                calls.setdefault(r.tid, set()).add(names.get(r.nr, str(r.nr)))
        assert "setgroups" in calls.get(plus, set()) and "setgroups" in calls.get(first, set())
        assert "setgroups" not in calls.get(second, set())
        if kernel_sets.caps_available():
            assert tracer.granted[PRIVILEGED]["CAP_SETGID"] >= 1
            assert tracer.granted[SANDBOXED]["CAP_SETGID"] >= 2  # both sandboxed runs counted
    finally:
        shutil.rmtree(gate)
