"""`learn UNIT --exercise CMD`: the workload runs again until it succeeds once, says when it
never did, and nothing of it outlives the trace. Real processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autosandbox.trace.workload import Workload


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run (a zombie left to its reaper ran its last)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _finish(w: Workload) -> None:
    assert w.proc is not None
    w.proc.wait(30)


def test_a_failing_workload_runs_again_and_is_reported() -> None:
    w = Workload("exit 3")
    for _ in range(3):
        w.tick()
        _finish(w)
    w.tick()  # the third run failed too: a fourth starts
    _finish(w)
    assert w.runs == 4 and not w.ok
    assert w.missed() == ("the --exercise command never succeeded while learning (4 runs): "
                          "the profile misses its code paths")


def test_a_workload_that_succeeds_is_not_run_again(tmp_path: Path) -> None:
    flag = tmp_path / "reached"
    w = Workload(f"test -e {flag} || {{ touch {flag}; exit 1; }}")  # fails once, then succeeds
    w.tick()
    _finish(w)
    w.tick()
    _finish(w)
    assert w.missed() is None and w.ok and w.runs == 2
    w.tick()
    assert w.runs == 2


def test_a_running_workload_is_not_started_twice() -> None:
    w = Workload("sleep 30")
    w.tick()
    first = w.proc
    w.tick()
    assert w.proc is first and w.runs == 1
    w.stop(cut=False)


@pytest.mark.parametrize("cut", [False, True])
def test_stop_ends_the_workload_and_what_it_started(cut: bool) -> None:
    w = Workload("sleep 30 & sleep 30; wait")
    w.tick()
    assert w.proc is not None
    pgid = w.proc.pid  # a session of its own: its group is its pid
    time.sleep(0.2)
    w.stop(cut)
    assert w.proc.poll() is not None
    time.sleep(0.2)
    assert _alive_in_group(pgid) == []


def test_no_workload_does_nothing() -> None:
    w = Workload(None)
    w.tick()
    w.stop(cut=True)
    assert w.proc is None and w.runs == 0 and w.missed() is None
