"""Helpers: run real programs under real strace and synthesize for this host's systemd."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autosandbox.profile import Profile
from autosandbox.synth.model import Sandbox
from autosandbox.synth.synthesize import synthesize
from autosandbox.synth.target import host_target
from autosandbox.systemd import analyze
from autosandbox.trace.command import trace_command
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.strace_parser import StraceParser

# Debian's interpreter: its files live under /usr, so home-directory rules are not disturbed
# by a per-user Python installation.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def trace_python(code: str, *args: str, cwd: str | None = None) -> Profile:
    result = trace_command([PYTHON, "-c", code, *args], cwd=cwd or "/")
    assert result.exit_code == 0, f"traced program failed with {result.exit_code}"
    return result.profile


def record(lines: list[str], roots: tuple[int, ...] = (), uid: int = 0, gid: int = 0,
           first_is_root: bool = False) -> Profile:
    """The profile of recorded strace lines, as the recorder makes it."""
    profile = Profile()
    rec = Recorder(profile, "/", uid=uid, gid=gid, roots=roots, first_is_root=first_is_root)
    parser = StraceParser(READ_CALLS)
    for line in lines:
        ev = parser.feed(line)
        if ev is not None:
            rec.handle(ev)
    return rec.finish(parser)


def sandbox_for(profile: Profile) -> Sandbox:
    return synthesize(profile, host_target())


def checked_dropin(profile: Profile) -> tuple[Sandbox, str]:
    """Synthesize and assert that systemd-analyze verify has nothing to say about it."""
    sb = sandbox_for(profile)
    text = sb.render()
    unit = analyze.command_unit(profile.subject.command)
    warnings = analyze.verify(unit, text)
    assert warnings == [], f"systemd-analyze verify: {warnings}\n{text}"
    return sb, text


def values(sb: Sandbox, directive: str) -> list[str] | None:
    return sb.values(directive)


def omitted(sb: Sandbox) -> dict[str, str]:
    return {o.directive: o.why for o in sb.omitted}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory outside /tmp (which PrivateTmp= handles) and outside home directories."""
    base = Path("/srv") if Path("/srv").is_dir() else Path("/var/local")
    path = base / f"autosandbox-test-{os.getpid()}-{os.urandom(3).hex()}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
