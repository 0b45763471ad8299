"""(VM only) audit rules record events caused by a service's process.

Note: on the exit filter list the first matching rule wins (its key is the one logged),
so each test installs exactly one rule at a time.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Iterator

import pytest
from systemd_harness import InstalledService, InstallService, run, wait_for

pytestmark = pytest.mark.vm

STATE_FILE = "/var/lib/as-pyapp/state.json"


def get(port: int, path: str = "/") -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            status: int = r.status
            return status
    except OSError:
        return None


def ausearch(key: str, pid: int) -> str:
    """Events with this key caused by process pid (ausearch exits 1 on no match)."""
    cp = run(["ausearch", "--input-logs", "-k", key, "-p", str(pid), "-i"])
    return cp.stdout if cp.returncode == 0 else ""


def new_key(kind: str) -> str:
    return f"as-it-{kind}-{os.getpid()}-{int(time.time() * 1000)}"


@contextlib.contextmanager
def audit_rule(add: list[str], delete: list[str], key: str) -> Iterator[None]:
    """auditctl ADD...; yield; auditctl DELETE... (always), and check it is gone."""
    cp = run(["auditctl", *add])
    assert cp.returncode == 0, cp.stderr
    try:
        assert key in run(["auditctl", "-l"]).stdout
        yield
    finally:
        run(["auditctl", *delete])
    assert key not in run(["auditctl", "-l"]).stdout


@pytest.fixture
def pyapp(install_service: InstallService) -> InstalledService:
    wait_for(
        lambda: run(["systemctl", "is-active", "auditd"]).stdout.strip() == "active",
        what="auditd active",
    )
    svc = install_service("as-pyapp")
    svc.start()
    wait_for(lambda: get(8082, "/health") == 200, what="pyapp on :8082")
    return svc


def test_syscall_rule_scoped_to_service_pid(pyapp: InstalledService) -> None:
    pid = int(pyapp.prop("MainPID"))
    key = new_key("sys")
    rule = [
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "openat",
        "-S",
        "rename",
        "-F",
        f"pid={pid}",
        "-F",
        "key=" + key,
    ]
    with audit_rule(["-a", *rule], ["-d", *rule], key):
        assert get(8082, "/") == 200  # the app rewrites its state file
        out = wait_for(lambda: ausearch(key, pid), timeout=20, what="syscall audit event")
    assert f"pid={pid} " in out, out
    assert STATE_FILE in out, out
    assert "comm=python3" in out, out


def test_path_watch_on_service_state_dir(pyapp: InstalledService) -> None:
    pid = int(pyapp.prop("MainPID"))
    key = new_key("watch")
    rule = ["/var/lib/as-pyapp/", "-p", "wa", "-k", key]
    with audit_rule(["-w", *rule], ["-W", *rule], key):
        assert get(8082, "/") == 200
        out = wait_for(lambda: ausearch(key, pid), timeout=20, what="watch audit event")
    assert f"pid={pid} " in out, out
    assert STATE_FILE in out, out
