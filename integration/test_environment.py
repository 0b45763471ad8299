"""The test machine itself: systemd is PID 1 and the tools autosandbox relies on exist."""

from __future__ import annotations

import importlib
import shutil

import pytest
from systemd_harness import InstallService, run, systemd_is_pid1


def test_systemd_is_pid1() -> None:
    assert systemd_is_pid1()
    assert run(["systemctl", "--version"], check=True).stdout.startswith("systemd ")


def test_system_is_running() -> None:
    cp = run(["systemctl", "is-system-running"])
    state = cp.stdout.strip()
    failed = run(["systemctl", "--failed", "--no-pager", "--no-legend"]).stdout
    assert state in ("running", "degraded"), state
    assert state == "running", f"system is {state}; failed units:\n{failed}"


@pytest.mark.parametrize(
    "tool",
    [
        "systemd-analyze",
        "systemd-run",
        "journalctl",
        "busctl",
        "strace",
        "curl",
        "wrk",
        "ip",
        "ps",
        "nsenter",
        "auditctl",
        "ausearch",
        "nginx",
        "redis-server",
        "redis-cli",
    ],
)
def test_tool_present(tool: str) -> None:
    assert shutil.which(tool), f"{tool} not installed in the image"


@pytest.mark.parametrize("module", ["click", "pydbus", "psutil", "pyroute2", "hypothesis", "gi"])
def test_python_module_importable(module: str) -> None:
    importlib.import_module(module)


def test_systemd_analyze_verify_and_security(install_service: InstallService) -> None:
    svc = install_service("as-pyapp")
    cp = run(["systemd-analyze", "verify", "/etc/systemd/system/" + svc.unit])
    assert cp.returncode == 0, cp.stderr
    cp = run(["systemd-analyze", "security", "--no-pager", svc.unit])
    assert cp.returncode == 0, cp.stderr
    assert f"Overall exposure level for {svc.unit}" in cp.stdout
