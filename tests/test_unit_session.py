"""UnitSession, the hold learn, validate, apply, revert and reset take on a unit: checks in
order, the per-unit lock, signals routed and put back, a leftover drop-in refused, and the
restore run when it is due, whatever happens (no systemd needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from autosandbox import interrupts
from autosandbox.errors import UserError
from autosandbox.systemd import dropins
from autosandbox.systemd.dropins import TRACE_DROPIN, TRIAL_DROPIN
from autosandbox.systemd.session import UnitSession

UNIT = "as-session-probe.service"


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Locks in a directory of the test's own; the interruption state clean around it."""
    d = tmp_path / "state"
    monkeypatch.setattr(dropins, "STATE_DIR", d)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    interrupts.forget()
    yield d
    interrupts.forget()


def _mine(signum: int, frame: FrameType | None) -> None:
    """A handler of the caller's (what the session must put back)."""


@pytest.fixture
def own_handlers() -> Iterator[None]:
    old = {s: signal.signal(s, _mine) for s in interrupts.SIGNALS}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def test_non_root_is_refused_before_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError) as exc:
        UnitSession("not a unit name")
    assert str(exc.value) == ("learning a unit needs root (it installs a drop-in and restarts "
                              "the unit): run with sudo")


def test_the_name_is_checked_a_template_left_to_its_socket() -> None:
    with pytest.raises(UserError, match="is not a service"):
        UnitSession("as-session-probe.socket")
    with pytest.raises(UserError, match="is a template: name an instance"):
        UnitSession("@.service")  # no prefix: not a template either
    UnitSession("as-echo@.service")  # learn_target / template_socket resolve it


def test_a_lock_held_by_another_process_is_refused(state_dir: Path) -> None:
    state_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         f"fd = os.open({str(state_dir / f'{UNIT}.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
        ran = []
        with pytest.raises(UserError) as exc, UnitSession(UNIT, restore=lambda: ran.append(1)):
            pytest.fail("entered a session another process holds")
        assert str(exc.value) == f"another autosandbox is already working on {UNIT}"
        assert ran == []  # nothing of ours began: nothing to restore
        assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before
    finally:
        holder.communicate("")
    with UnitSession(UNIT):  # its holder gone, the lock is free
        pass


def test_one_session_per_unit_in_one_process_too() -> None:
    with UnitSession(UNIT), pytest.raises(UserError, match="already working on"), \
            UnitSession(UNIT):
        pass
    with UnitSession(UNIT):  # released on the way out
        pass


@pytest.mark.parametrize(("name", "kind"), [(TRACE_DROPIN, "trace"), (TRIAL_DROPIN, "trial")])
def test_a_dropin_left_by_an_earlier_run_is_refused(tmp_path: Path, own_handlers: None,
                                                    name: str, kind: str) -> None:
    dropin = tmp_path / f"{UNIT}.d" / name
    dropin.parent.mkdir()
    dropin.write_text("[Service]\n")
    ran = []
    with pytest.raises(UserError) as exc, \
            UnitSession(UNIT, own_dropin=dropin, restore=lambda: ran.append(1)):
        pytest.fail("entered with a leftover drop-in")
    assert str(exc.value) == (f"a {kind} drop-in from an earlier run is still installed "
                              f"({dropin}): run 'autosandbox reset {UNIT}' first")
    assert ran == []
    assert all(signal.getsignal(s) is _mine for s in interrupts.SIGNALS)
    dropin.unlink()
    with UnitSession(UNIT, own_dropin=dropin):  # the refusal let go of the lock
        pass


@pytest.mark.parametrize("end", ["normal", "error", "interrupt"])
def test_signals_are_routed_inside_and_put_back_after(own_handlers: None, end: str) -> None:
    try:
        with UnitSession(UNIT):
            assert all(signal.getsignal(s) is not _mine for s in interrupts.SIGNALS)
            if end == "error":
                raise RuntimeError("boom")
            if end == "interrupt":
                os.kill(os.getpid(), signal.SIGTERM)  # unwinds like Ctrl-C
                time.sleep(5)
                pytest.fail("SIGTERM did not interrupt")
    except RuntimeError:
        assert end == "error"
    except KeyboardInterrupt:
        assert end == "interrupt"
    else:
        assert end == "normal"
    assert all(signal.getsignal(s) is _mine for s in interrupts.SIGNALS)


# (restore_on, how the body ends) -> whether the restore runs
DUE = {
    ("exit", "normal"): True, ("exit", "error"): True, ("exit", "interrupt"): True,
    ("error", "normal"): False, ("error", "error"): True, ("error", "interrupt"): True,
    ("interrupt", "normal"): False, ("interrupt", "error"): False,
    ("interrupt", "interrupt"): True,
    # a signal a library turned into an error of its own (pydbus: a KeyError), which ends
    # the body: the command exits 130 saying the unit was restored, so it must be (CI: apply
    # left its drop-in)
    ("exit", "error after a signal"): True, ("error", "error after a signal"): True,
    ("interrupt", "error after a signal"): True,
}


@pytest.mark.parametrize(("restore_on", "end"), sorted(DUE))
def test_restore_runs_when_due(restore_on: str, end: str) -> None:
    ran: list[bool] = []

    def restore() -> None:
        # still held while it restores: the lock, and the signals routed
        ran.append(signal.getsignal(signal.SIGTERM) is not _mine)
        with pytest.raises(UserError, match="already working on"), UnitSession(UNIT):
            pass

    errors = {"normal": None, "error": UserError("failed"), "interrupt": KeyboardInterrupt(),
              "error after a signal": UserError("cannot load the unit")}
    raised = errors[end]
    try:
        with UnitSession(UNIT, restore=restore, restore_on=restore_on):  # type: ignore[arg-type]
            if end == "error after a signal":
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                except KeyboardInterrupt:
                    pass  # what pydbus's bare `except:` does with it
            if raised is not None:
                raise raised
    except (UserError, KeyboardInterrupt) as exc:
        assert exc is raised  # the restore never replaces what ended the body
    else:
        assert raised is None
    assert ran == ([True] if DUE[(restore_on, end)] else [])


def test_a_restore_given_inside_runs() -> None:
    """validate: what it puts back exists only once its snapshot is taken."""
    ran = []
    with UnitSession(UNIT) as session:
        session.restore = lambda: ran.append("restored")
    assert ran == ["restored"]


def test_a_second_signal_does_not_cut_the_restore_short(own_handlers: None) -> None:
    steps = []

    def restore() -> None:
        steps.append("begun")
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal: remembered, not raised
        time.sleep(0.1)
        steps.append("finished")

    with pytest.raises(KeyboardInterrupt), UnitSession(UNIT, restore=restore):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        pytest.fail("SIGINT did not interrupt")
    assert steps == ["begun", "finished"]
    assert interrupts.interrupted() == signal.SIGINT


def test_a_signal_during_the_restore_after_a_normal_end_waits_for_it(own_handlers: None,
                                                                     ) -> None:
    steps = []

    def restore() -> None:
        steps.append("begun")
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.1)
        steps.append("finished")

    with pytest.raises(KeyboardInterrupt), UnitSession(UNIT, restore=restore):
        steps.append("work")
    assert steps == ["work", "begun", "finished"]
    assert all(signal.getsignal(s) is _mine for s in interrupts.SIGNALS)
