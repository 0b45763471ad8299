"""The user's workload while a unit is learned (`learn UNIT --exercise CMD`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from autosandbox import procs
from autosandbox.systemd import runstate


class Workload:
    """CMD runs again each time it fails, until it succeeds once: a service may listen a moment
    after systemd calls it active, and a workload that never reached it taught nothing. It runs
    in a session of its own, recorded for `reset`, and is stopped with the trace."""

    def __init__(self, command: str | None) -> None:
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.ok = False
        self.runs = 0

    def tick(self) -> None:
        """Called through the window: start CMD again if its last run failed."""
        proc = self.proc
        if not self.command or self.ok or (proc is not None and proc.poll() is None):
            return
        if proc is not None:
            self.ok = proc.returncode == 0
        if not self.ok:
            self.runs += 1
            self.proc = procs.spawn(["/bin/sh", "-c", self.command],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runstate.record_process(self.proc.pid)

    def missed(self) -> str | None:
        """At the end of the window: why the profile may miss the workload's code paths."""
        if not self.command:
            return None
        if self.proc is not None and self.proc.poll() == 0:
            self.ok = True
        if self.ok:
            return None
        return (f"the --exercise command never succeeded while learning ({self.runs} runs): "
                "the profile misses its code paths")

    def stop(self, cut: bool) -> None:
        """A run still going is ended with its session (killed if the trace was cut)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if cut else signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
