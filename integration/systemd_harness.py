"""Helpers for the integration tests against a real systemd (used by conftest.py and
the tests). Standard library only at module level, so collection never fails elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

HERE = Path(__file__).resolve().parent
SERVICES_DIR = HERE / "services"
UNIT_DIR = Path("/etc/systemd/system")
RUNTIME_UNIT_DIR = Path("/run/systemd/system")

CONTAINER_HINT = "run integration/run-container"
VM_HINT = "run integration/run-vm"

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers
def run(cmd: str | Sequence[str], check: bool = False, timeout: float | None = 120,
        input: str | None = None,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (list, or str for a shell command); return CompletedProcess (text)."""
    shell = isinstance(cmd, str)
    return subprocess.run(
        cmd,
        shell=shell,
        check=check,
        timeout=timeout,
        input=input,
        env=env,
        capture_output=True,
        text=True,
    )


def systemd_is_pid1() -> bool:
    try:
        comm = Path("/proc/1/comm").read_text().strip()
    except OSError:
        return False
    return comm == "systemd" and Path("/run/systemd/system").is_dir()


def in_container() -> bool:
    if not shutil.which("systemd-detect-virt"):
        return False
    return run(["systemd-detect-virt", "--container", "--quiet"]).returncode == 0


def skip_reason_for_host() -> str | None:
    if not systemd_is_pid1():
        return f"needs systemd as PID 1 ({CONTAINER_HINT} or {VM_HINT})"
    if os.geteuid() != 0:
        return f"needs root ({CONTAINER_HINT} or {VM_HINT})"
    return None


def wait_for(predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2,
             what: str = "condition") -> T:
    """Poll predicate() until it returns a truthy value; return it or fail the test."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def unit_property(unit: str, prop: str) -> str:
    return run(["systemctl", "show", "--value", "-p", prop, unit], check=True).stdout.strip()


def daemon_reload() -> None:
    run(["systemctl", "daemon-reload"], check=True)


def unit_diagnostics(unit: str) -> str:
    """Status + journal of a unit, for assertion messages."""
    st = run(["systemctl", "status", "--no-pager", "-l", unit])
    jr = run(["journalctl", "--no-pager", "-n", "40", "-u", unit])
    return f"{st.stdout}\n{st.stderr}\n{jr.stdout}"


class InstalledService:
    """An example service from integration/services/<name> installed on this system."""

    def __init__(self, name: str, units: list[str], files: list[str]) -> None:
        self.name = name
        self.units = units  # unit file names, e.g. ["as-nginx.service"]
        self.files = files  # absolute paths that were created

    @property
    def unit(self) -> str:
        return self.units[0]

    def start(self, unit: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        unit = unit or self.unit
        cp = run(["systemctl", "start", unit], timeout=90)
        if check and cp.returncode != 0:
            pytest.fail(f"systemctl start {unit} failed: {cp.stderr}\n{unit_diagnostics(unit)}")
        return cp

    def stop(self, unit: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["systemctl", "stop", unit or self.unit], timeout=90)

    def prop(self, prop: str, unit: str | None = None) -> str:
        return unit_property(unit or self.unit, prop)

    def diagnostics(self, unit: str | None = None) -> str:
        return unit_diagnostics(unit or self.unit)


_DIR_KEYS = {
    "StateDirectory": "/var/lib",
    "LogsDirectory": "/var/log",
    "CacheDirectory": "/var/cache",
    "RuntimeDirectory": "/run",
    "ConfigurationDirectory": "/etc",
}


def _managed_dirs(unit_file: Path) -> list[str]:
    """Directories systemd creates for a unit (StateDirectory= etc.); removed on teardown."""
    out = []
    for line in unit_file.read_text().splitlines():
        key, sep, val = line.partition("=")
        if sep and key.strip() in _DIR_KEYS:
            out += [os.path.join(_DIR_KEYS[key.strip()], v) for v in val.split()]
    return out


def _remove(path: str | Path) -> None:
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(str(p), ignore_errors=True)


# The fixtures' types (conftest.py), for the tests' annotations.
InstallService = Callable[[str], InstalledService]
DropIn = Callable[..., Path]
Sh = Callable[..., "subprocess.CompletedProcess[str]"]
