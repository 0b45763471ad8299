"""Helpers for the integration tests against a real systemd (used by conftest.py and
the tests). Standard library only at module level, so collection never fails elsewhere.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVICES_DIR = HERE / "services"
UNIT_DIR = Path("/etc/systemd/system")
RUNTIME_UNIT_DIR = Path("/run/systemd/system")

CONTAINER_HINT = "run integration/run-container"
VM_HINT = "run integration/run-vm"


# --------------------------------------------------------------------------- helpers
def run(cmd, check=False, timeout=120, input=None, env=None):
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


def systemd_is_pid1():
    try:
        comm = Path("/proc/1/comm").read_text().strip()
    except OSError:
        return False
    return comm == "systemd" and Path("/run/systemd/system").is_dir()


def in_container():
    if not shutil.which("systemd-detect-virt"):
        return False
    return run(["systemd-detect-virt", "--container", "--quiet"]).returncode == 0


def skip_reason_for_host():
    if not systemd_is_pid1():
        return f"needs systemd as PID 1 ({CONTAINER_HINT} or {VM_HINT})"
    if os.geteuid() != 0:
        return f"needs root ({CONTAINER_HINT} or {VM_HINT})"
    return None


def wait_for(predicate, timeout=30.0, interval=0.2, what="condition"):
    """Poll predicate() until it returns a truthy value; return it or fail the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def unit_property(unit, prop):
    return run(["systemctl", "show", "--value", "-p", prop, unit], check=True).stdout.strip()


def daemon_reload():
    run(["systemctl", "daemon-reload"], check=True)


def unit_diagnostics(unit):
    """Status + journal of a unit, for assertion messages."""
    st = run(["systemctl", "status", "--no-pager", "-l", unit])
    jr = run(["journalctl", "--no-pager", "-n", "40", "-u", unit])
    return f"{st.stdout}\n{st.stderr}\n{jr.stdout}"


class InstalledService:
    """An example service from integration/services/<name> installed on this system."""

    def __init__(self, name, units, files):
        self.name = name
        self.units = units  # unit file names, e.g. ["as-nginx.service"]
        self.files = files  # absolute paths that were created

    @property
    def unit(self):
        return self.units[0]

    def start(self, unit=None, check=True):
        unit = unit or self.unit
        cp = run(["systemctl", "start", unit], timeout=90)
        if check and cp.returncode != 0:
            pytest.fail(f"systemctl start {unit} failed: {cp.stderr}\n{unit_diagnostics(unit)}")
        return cp

    def stop(self, unit=None):
        return run(["systemctl", "stop", unit or self.unit], timeout=90)

    def prop(self, prop, unit=None):
        return unit_property(unit or self.unit, prop)

    def diagnostics(self, unit=None):
        return unit_diagnostics(unit or self.unit)


_DIR_KEYS = {
    "StateDirectory": "/var/lib",
    "LogsDirectory": "/var/log",
    "CacheDirectory": "/var/cache",
    "RuntimeDirectory": "/run",
    "ConfigurationDirectory": "/etc",
}


def _managed_dirs(unit_file):
    """Directories systemd creates for a unit (StateDirectory= etc.); removed on teardown."""
    out = []
    for line in unit_file.read_text().splitlines():
        key, sep, val = line.partition("=")
        if sep and key.strip() in _DIR_KEYS:
            out += [os.path.join(_DIR_KEYS[key.strip()], v) for v in val.split()]
    return out


def _remove(path):
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(str(p), ignore_errors=True)
