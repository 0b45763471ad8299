"""One interruption contract: SIGINT, SIGTERM, SIGHUP and every other catchable signal whose
default would end us (SIGQUIT, SIGUSR1/2, SIGALRM, SIGXCPU: Ctrl-\\, a stray `kill -USR1`, a
CPU-time limit's warning) raise KeyboardInterrupt once, so that nothing is left behind.

The first signal unwinds the work (every `finally` restores what it changed); later signals
are remembered but never raise again, so a second Ctrl-C cannot cut a restore in half.
Code that must not be cut even by the first signal (a restore after the work ended normally)
runs `shielded()`: a signal arriving inside is raised when the shield ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

# SIGPIPE is ignored by Python (a write fails instead); SIGPROF and SIGVTALRM are profilers'.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGALRM, signal.SIGXCPU)

_state = {"raised": 0, "pending": 0, "shield": 0}


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["raised"] or _state["shield"]:
        _state["pending"] = _state["pending"] or signum
        return
    if _in_finalizer(frame):
        # Python ignores an exception raised in __del__ (GLib's run on D-Bus objects): the
        # interruption would be lost. The signal comes back once the finalizer is done.
        _state["pending"] = signum  # check() sees it even before it comes back
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    _state["raised"] = signum
    raise KeyboardInterrupt


def _in_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def install() -> dict[int, object]:
    """Route the three signals here; returns the previous handlers (for `restore`)."""
    old: dict[int, object] = {}
    for s in SIGNALS:
        old[s] = signal.getsignal(s)
        signal.signal(s, _handler)
    return old


def restore(old: dict[int, object]) -> None:
    for s, h in old.items():
        if callable(h) or isinstance(h, int):
            signal.signal(s, h)


def interrupted() -> int:
    """The signal that interrupted us (0: none)."""
    return _state["raised"] or _state["pending"]


def check() -> None:
    """Raise KeyboardInterrupt if a signal came and its exception was caught on the way (a
    stage that stops early and returns): what it returns must not be saved or printed."""
    if interrupted():
        _state["raised"] = _state["raised"] or _state["pending"]
        raise KeyboardInterrupt


def forget() -> None:
    """The interruption was handled as a normal end (Ctrl-C ending an untimed command)."""
    _state["raised"] = _state["pending"] = 0


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """No signal interrupts the body; one that arrived inside is raised once it is done."""
    _state["shield"] += 1
    try:
        yield
    finally:
        _state["shield"] -= 1
    if not _state["shield"] and _state["pending"] and not _state["raised"]:
        _state["raised"] = _state["pending"]
        raise KeyboardInterrupt


@contextlib.contextmanager
def unmasked() -> Iterator[None]:
    """Around library code that turns an exception it catches into one of its own: pydbus's
    bare `except:` around its parse of an object's interface makes our KeyboardInterrupt a
    KeyError ("invalid introspection XML"), which a caller takes for systemd's answer and
    goes on (CI: a learn ran its window and two trials after a SIGTERM). An error made of
    an interruption raised inside is that interruption; one whose context is an earlier
    interruption (a restore failing while we unwind) stays what it is."""
    before = _state["raised"]
    try:
        yield
    except Exception as exc:
        ours = exc.__context__
        if not before and _state["raised"] and isinstance(ours, KeyboardInterrupt):
            raise ours from None
        raise


def pause_for_tests(point: str) -> None:
    """Integration tests kill a run at a named point: AUTOSANDBOX_TEST_PAUSE=POINT:FILE
    creates FILE there and waits (to be killed). Unset: nothing."""
    want, _, flag = os.environ.get("AUTOSANDBOX_TEST_PAUSE", "").partition(":")
    if want != point or not flag.startswith("/run/"):
        return
    Path(flag).touch()
    while True:
        time.sleep(1)
