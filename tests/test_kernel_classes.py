"""The kernel's de-duplication keeps a unit's `+` lines (outside the sandbox) apart from its
sandboxed lines. Seen: with one map for all, an ExecStartPre=+ line that wrote a file, made a
call or passed a capability check first hid the same from the sandboxed ExecStart=, whose
profile then missed it (ReadWritePaths=, SystemCallFilter= or CapabilityBoundingSet= too tight).
Here the shims of the two kinds of line (gate.shim_script) join through their gates, no systemd;
the syscall set's tracefs instance is given the sandboxed pids as unit mode gives them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from autosandbox.trace import kernel_sets, opens
from autosandbox.trace.gate import GateServer, shim_script
from autosandbox.trace.kernel_sets import PRIVILEGED, SANDBOXED
from autosandbox.trace.opens import OpenRecord, OpenTracer
from autosandbox.trace.tracefs import SyscallSetTracer, syscall_tracer_available

from .conftest import PYTHON

PROGRAM = ("import os, sys\nprint(os.getpid(), flush=True)\n"
           "open(sys.argv[1], 'w').write('x')\n"
           "os.setgroups(os.getgroups())\n")  # as root: a check the kernel grants


@pytest.mark.skipif(not opens.available() or shutil.which("strace") is None,
                    reason="needs root, bpftrace, strace and the syscall tracepoints of the host")
@pytest.mark.parametrize("daemonized", [False, True], ids=["strace-child", "strace-D"])
def test_a_privileged_line_hides_nothing_of_the_sandboxed_lines(tmp_path: Path,
                                                                daemonized: bool) -> None:
    """Also: what is followed starts with the program strace executes, whether strace forks
    it (command mode) or, with -D as in a unit, the process that ran strace becomes it; strace's
    own start (its libunwind) is never reported."""
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
                    ["/bin/sh", "-c", script, "shim", "strace", *(["-D"] if daemonized else []),
                     "-f", "-o", "/dev/null", "--", PYTHON, "-c", PROGRAM, str(target)],
                    stdout=subprocess.PIPE, text=True, check=True, timeout=60).stdout
                pids.append(int(out.split()[0]))
            # every CPU's records printed (close() waits so too: stopped before, bpftrace drops
            # what it has not read)
            assert tracer.flush()
        finally:
            tracer.close()
            gates.close()
        plus, first, _ = pids
        writes = {r.tid for r in tracer.records if isinstance(r, OpenRecord)
                  and r.path == str(target) and r.flags & opens.O_WRONLY}
        # once per class: the sandboxed line's write is not hidden by the `+` line's, and
        # the second sandboxed run's is (the same class reported it)
        assert writes == {plus, first}, (writes, pids)
        assert not [r.path for r in tracer.records
                    if isinstance(r, OpenRecord) and "libunwind" in r.path]
        assert any(isinstance(r, OpenRecord) and r.path.endswith("/ld.so.cache")
                   for r in tracer.records)  # the program's start is
        if kernel_sets.caps_available():
            assert tracer.granted[PRIVILEGED]["CAP_SETGID"] >= 1
            assert tracer.granted[SANDBOXED]["CAP_SETGID"] >= 2  # both sandboxed runs counted
    finally:
        shutil.rmtree(gate)


@pytest.mark.skipif(not syscall_tracer_available(), reason="needs root and a usable tracefs")
def test_a_privileged_line_silences_no_call_of_the_sandboxed_lines(tmp_path: Path) -> None:
    """Each call's event is disabled once a sandboxed line made it, never by a `+` line."""
    sandboxed: set[int] = set()
    pids = []
    with SyscallSetTracer(None, sandboxed.__contains__) as tracer:
        for privileged in (True, False, False):  # as ExecStartPre=+, then ExecStart= twice
            proc = subprocess.Popen(["/bin/sh", "-c", 'read -r _; exec "$@"', "shim", PYTHON,
                                     "-c", PROGRAM, str(tmp_path / "f")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            tracer.add_pid(proc.pid)  # as the gate does, before the line runs
            if not privileged:
                sandboxed.add(proc.pid)
            proc.communicate("go\n", timeout=60)
            pids.append(proc.pid)
            if proc.pid in sandboxed and "setgroups" in tracer.silenced:
                continue  # silenced: nothing more will come of it
            deadline = time.monotonic() + 20  # the reader decides before the next line runs
            while proc.pid not in tracer.seen.get("setgroups", set()):
                assert time.monotonic() < deadline, "tracefs never reported setgroups"
                time.sleep(0.05)
    plus, first, second = pids
    assert "setgroups" in tracer.syscalls_for({plus})
    assert "setgroups" in tracer.syscalls_for({first})  # not silenced by the `+` line
    assert "setgroups" not in tracer.syscalls_for({second})  # silenced by the first
    assert "setgroups" in tracer.silenced
