"""Units and environments that cannot be learned: one line, exit 2, the unit as found."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from systemd_harness import UNIT_DIR, daemon_reload, run

SRC = Path(__file__).resolve().parent.parent


def autosandbox(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autosandbox", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(SRC)),
                          cwd="/tmp", check=False)


def one_line(cp: subprocess.CompletedProcess[str], code: int = 2) -> str:
    lines = cp.stderr.strip().splitlines()
    assert cp.returncode == code, cp.stderr
    assert len(lines) == 1 and lines[0].startswith("autosandbox: error: "), cp.stderr
    return lines[0]


@pytest.fixture
def unit_file() -> Iterator[Callable[[str, bytes], str]]:
    made: list[str] = []

    def make(name: str, body: bytes) -> str:
        path = UNIT_DIR / name
        path.write_bytes(b"[Service]\n" + body)
        made.append(name)
        daemon_reload()
        return name

    yield make
    for name in made:
        run(["systemctl", "stop", name])
        run(["systemctl", "reset-failed", name])
        (UNIT_DIR / name).unlink()
    daemon_reload()


def test_a_unit_that_does_not_start(unit_file) -> None:  # type: ignore[no-untyped-def]
    unit = unit_file("as-fails.service", b"ExecStart=/bin/false\n")
    line = one_line(autosandbox("learn", "-q", unit, "--duration", "3s"))
    assert "did not start" in line and f"journalctl -u {unit}" in line
    assert not Path(f"/run/systemd/system/{unit}.d").exists()
    assert not Path(f"/var/lib/autosandbox/{unit}/learned.conf").exists()


def test_a_unit_that_exits_at_once(unit_file) -> None:  # type: ignore[no-untyped-def]
    unit = unit_file("as-quits.service", b"Type=exec\nExecStart=/bin/sh -c 'sleep 0.5'\n")
    run(["systemctl", "start", unit])
    line = one_line(autosandbox("learn", "-q", unit, "--duration", "5s"))
    assert f"journalctl -u {unit}" in line
    assert not Path(f"/run/systemd/system/{unit}.d").exists()


def test_a_non_utf8_exec_line(unit_file) -> None:  # type: ignore[no-untyped-def]
    unit = unit_file("as-latin1.service", b"ExecStart=/bin/echo caf\xe9\n")
    cp = autosandbox("learn", "-q", unit, "--duration", "2s")
    assert cp.returncode == 2 and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert "Traceback" not in cp.stderr and "internal error" not in cp.stderr


def test_a_full_run_directory() -> None:
    """/run/autosandbox on a full file system: one line, nothing of ours left there."""
    state = Path("/run/autosandbox")
    existed = state.exists()
    state.mkdir(mode=0o711, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0711", "tmpfs", str(state)], check=True)
    try:
        filler = state / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=64"],
                       capture_output=True, check=False)
        cp = autosandbox("learn", "-q", "--duration", "2s", "--", "/bin/sleep", "5")
        line = one_line(cp)
        assert "No space left" in line or "cannot" in line, line
        filler.unlink()
        assert [p.name for p in state.iterdir() if not p.name.endswith(".lock")] in (
            [], ["runs"]), list(state.iterdir())
        assert not any((state / "runs").iterdir()) if (state / "runs").exists() else True
    finally:
        run(["umount", str(state)])
        if not existed:
            run(["rmdir", str(state)])
