"""The learner sleeps in the kernel while nothing happens: every wake-up of ours runs on some
CPU of the server we trace (in the benchmark, on its own), so a timer that polls is a tax on the
service, not only on us. Counted as voluntary context switches of the waiting thread."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from autosandbox import procs
from autosandbox.trace.tracefs import SyscallSetTracer, syscall_tracer_available

from .conftest import PYTHON


def _switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_waiting_for_the_traced_program_sleeps_until_it_ends() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        me = threading.get_native_id()
        before = _switches(me)
        assert not procs.wait_exit(proc, 1.0)
        # Popen.wait(timeout=1) woke ~20 times (a 50 ms poll); a pidfd wait once or twice
        assert _switches(me) - before <= 5
        proc.kill()
        began = time.monotonic()
        assert procs.wait_exit(proc, 10.0)
        assert time.monotonic() - began < 5  # woken by the end, not by the timeout
        assert proc.returncode is not None
        assert procs.wait_exit(proc, 1.0)  # already reaped: still ended
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not syscall_tracer_available(), reason="needs root and a usable tracefs")
def test_the_tracefs_reader_sleeps_between_lines_and_wakes_for_one() -> None:
    with SyscallSetTracer(None, lambda pid: False) as tracer:
        assert tracer._thread is not None and tracer._thread.native_id is not None
        reader = tracer._thread.native_id
        time.sleep(0.2)
        before = _switches(reader)
        time.sleep(1.5)
        # a 50 ms poll woke it ~30 times in 1.5 s
        assert _switches(reader) - before <= 5
        proc = subprocess.Popen(["/bin/sh", "-c", 'read -r _; exec "$@"', "shim", PYTHON,
                                 "-c", "import os; os.getppid()"],
                                stdin=subprocess.PIPE, text=True)
        tracer.add_pid(proc.pid)
        proc.communicate("go\n", timeout=60)
        deadline = time.monotonic() + 20
        while proc.pid not in tracer.seen.get("getppid", set()):
            assert time.monotonic() < deadline, "the reader never reported getppid"
            time.sleep(0.05)
    assert tracer._thread is not None and not tracer._thread.is_alive()
