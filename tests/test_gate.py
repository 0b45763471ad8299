"""The gate that holds a unit's Exec line until tracefs follows it, with a real shell."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from autosandbox.trace.gate import GateServer, shim_script


def test_shim_reports_its_pid_and_waits_for_the_gate() -> None:
    seen: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        gates = GateServer(Path(tmp), 2, lambda pid, i, u, g: seen.append(pid), cgroup=None)
        try:
            script = shim_script(gates.control, gates.gates[1], 1)
            proc = subprocess.run(["/bin/sh", "-c", script, "shim", "/bin/sh", "-c",
                                   "echo $$"], capture_output=True, text=True, timeout=20)
        finally:
            gates.close()
        assert proc.returncode == 0, proc.stderr
        # The shell reported its own pid, which the program it became still has.
        assert seen == [int(proc.stdout.strip())]
        assert gates.opened == 1 and gates.errors == []
        assert not list(Path(tmp).iterdir())  # FIFOs removed


def test_a_failing_follow_is_recorded_and_the_gate_still_opens() -> None:
    def refuse(pid: int, index: int, uid: int, gid: int) -> None:
        raise OSError("tracefs refused")

    with tempfile.TemporaryDirectory() as tmp:
        gates = GateServer(Path(tmp), 1, refuse, cgroup=None)
        try:
            proc = subprocess.run(["/bin/sh", "-c", shim_script(gates.control, gates.gates[0], 0),
                                   "shim", "/bin/true"], timeout=20)
        finally:
            gates.close()
        assert proc.returncode == 0
        assert len(gates.errors) == 1 and "tracefs refused" in gates.errors[0]
