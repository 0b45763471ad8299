"""The one way external programs are run: errors in one line, C locale, -v shows them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autosandbox import commands
from autosandbox.errors import UserError
from autosandbox.profile import Profile, Subject


def test_failure_is_one_line_naming_the_command_and_what_it_said() -> None:
    script = "echo some output; echo first >&2; printf 'the reason\\n\\n' >&2; exit 3"
    with pytest.raises(commands.ToolError) as info:
        commands.run(["/bin/sh", "-c", script])
    exc = info.value
    assert isinstance(exc, UserError) and exc.returncode == 3
    text = str(exc)
    assert "\n" not in text
    assert text.startswith("/bin/sh -c ") and text.endswith("failed (exit 3): the reason")


def test_check_false_returns_the_exit_status() -> None:
    cp = commands.run(["/bin/sh", "-c", "echo out; exit 4"], check=False)
    assert (cp.returncode, cp.stdout) == (4, "out\n")


def test_timeout_is_its_own_error() -> None:
    with pytest.raises(commands.ToolTimeout) as info:
        commands.run(["/bin/sleep", "30"], timeout=0.5, check=False)
    assert info.value.returncode is None and "timed out" in str(info.value)


def test_a_timeout_kills_what_the_command_started(tmp_path: Path) -> None:
    """A user's check that hangs in a child of its shell: the child goes with it (it holds
    the output pipes; left alive it would outlive autosandbox)."""
    marker = f"as-timeout-{os.getpid()}"
    script = f"exec -a {marker} sleep 60 & wait"
    began = time.monotonic()
    with pytest.raises(commands.ToolTimeout):
        commands.run(["/bin/bash", "-c", script], timeout=1, check=False, new_session=True)
    assert time.monotonic() - began < 30  # not held by the child's copy of the pipes
    # SIGKILL is delivered when the child next runs: on a busy machine that is not at once
    deadline = time.monotonic() + 10
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(marker), "the shell's child outlived the timeout"


def _alive(marker: str) -> bool:
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(marker.encode()):
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    return True
        except OSError:
            continue
    return False


def test_output_is_read_in_the_c_locale_unless_the_command_is_the_users(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    show = ["/bin/sh", "-c", 'printf %s "$LC_ALL"']
    assert commands.run(show).stdout == "C"
    assert commands.run(show, c_locale=False).stdout == "de_DE.UTF-8"
    assert os.environ["LC_ALL"] == "de_DE.UTF-8"  # ours is left alone


def test_undecodable_output_does_not_fail() -> None:
    cp = commands.run(["/bin/sh", "-c", r"printf 'a\377b'"])
    assert cp.stdout == "a\ufffdb"


def test_each_command_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="autosandbox"):
        commands.run(["/bin/sh", "-c", "exit 2"], check=False)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "run: /bin/sh -c 'exit 2'"
    assert lines[1].startswith("  sh: exit 2 in ")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autosandbox", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_verbose_shows_the_commands_on_stderr_only(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    Profile(subject=Subject(command=["/bin/true"], cwd="/", uid=0)).save(path)
    quiet = _cli("synthesize", str(path))
    loud = _cli("-v", "synthesize", str(path))
    assert quiet.returncode == loud.returncode == 0, (quiet.stderr, loud.stderr)
    assert loud.stdout == quiet.stdout and "ProtectSystem=strict" in loud.stdout
    assert "run: systemctl --version" in loud.stderr
    assert "run: " not in quiet.stderr
