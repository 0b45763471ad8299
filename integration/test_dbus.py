"""Units are read and driven over D-Bus through pydbus, against the real systemd."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import InstallService, run, unit_property, wait_for
from test_learn import autosandbox, snapshot, spawn_learn

MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"


@pytest.fixture
def bus() -> Any:
    pydbus = pytest.importorskip("pydbus")
    return pydbus.SystemBus()


def test_manager_reachable(bus: Any) -> None:
    systemd = bus.get(".systemd1")
    assert systemd[MANAGER].Version.split()[0].isdigit() or systemd[MANAGER].Version
    assert systemd[MANAGER].SystemState in ("running", "degraded")


def test_unit_started_and_read_over_dbus(bus: Any, install_service: InstallService) -> None:
    svc = install_service("as-pyapp")
    manager = bus.get(".systemd1")[MANAGER]

    # Not loaded yet: GetUnit fails with NoSuchUnit, LoadUnit loads it.
    with pytest.raises(Exception) as exc:
        manager.GetUnit(svc.unit)
    assert "NoSuchUnit" in str(exc.value)
    path = manager.LoadUnit(svc.unit)
    obj = bus.get(".systemd1", path)
    unit, service = obj[UNIT], obj[SERVICE]
    assert unit.Id == svc.unit
    assert unit.LoadState == "loaded"
    assert unit.ActiveState == "inactive"
    assert unit.FragmentPath == "/etc/systemd/system/" + svc.unit

    # ExecStart is a(sasbttttuii): (path, argv, ignore_errors, timestamps..., pid, code, status)
    exec_start = service.ExecStart
    assert len(exec_start) == 1
    exe, argv = exec_start[0][0], exec_start[0][1]
    assert exe == "/usr/bin/python3"
    assert argv[:2] == ["/usr/bin/python3", "/usr/local/lib/as-pyapp/app.py"]
    assert "--port" in argv

    manager.StartUnit(svc.unit, "replace")
    wait_for(lambda: unit.ActiveState == "active", what="ActiveState=active")
    assert manager.GetUnit(svc.unit) == path
    assert unit.SubState == "running"

    main_pid = service.MainPID
    assert main_pid > 0
    assert main_pid == int(svc.prop("MainPID"))
    with open(f"/proc/{main_pid}/cmdline") as f:
        cmdline = f.read().split("\0")
    assert "/usr/local/lib/as-pyapp/app.py" in cmdline
    # The process sits in the unit's cgroup.
    with open(f"/proc/{main_pid}/cgroup") as f:
        assert svc.unit in f.read()
    assert service.ControlGroup.endswith("/" + svc.unit)

    manager.StopUnit(svc.unit, "replace")
    wait_for(lambda: unit.ActiveState in ("inactive", "failed"), what="unit stopped")
    assert unit.ActiveState == "inactive"
    assert service.MainPID == 0
    wait_for(lambda: not os.path.exists(f"/proc/{main_pid}"), what="main process gone")


def test_the_message_bus_is_refused_before_anything_changes(tmp_path: Path) -> None:
    """learn, validate and apply restart their unit (validation once per trial): on the
    message bus that cuts every service off it. Refused by name and through its socket,
    with the bus left running as it was (the same process)."""
    pid = unit_property("dbus.service", "MainPID")
    dropin = tmp_path / "bus.conf"
    dropin.write_text("[Service]\nProtectHome=yes\n")
    for args in (("learn", "dbus.service", "--duration", "5s"),
                 ("learn", "dbus.socket", "--duration", "5s"),
                 ("validate", "dbus.service", str(dropin)),
                 ("apply", "dbus.service", str(dropin), "--force")):
        cp = autosandbox(*args, timeout=120)
        assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
        lines = cp.stderr.strip().splitlines()
        assert len(lines) == 1 and "is the D-Bus message bus" in lines[0], (args, cp.stderr)
        assert "Traceback" not in cp.stderr
    assert unit_property("dbus.service", "MainPID") == pid
    assert unit_property("dbus.service", "ActiveState") == "active"
    assert not Path("/etc/systemd/system/dbus.service.d").exists()
    assert not Path("/run/systemd/system/dbus.service.d").exists()


@pytest.mark.parametrize("disturbance", [["systemctl", "restart", "dbus.service"],
                                         ["systemctl", "daemon-reexec"]],
                         ids=["bus-restart", "daemon-reexec"])
def test_a_lost_connection_during_a_learn_strands_nothing(
        install_service: InstallService, disturbance: list[str]) -> None:
    """systemd is driven over its own socket, not the bus: someone restarting dbus.service
    while a unit was learned left that unit with our trace drop-in loaded, the reload that
    restores it refused ("The connection is closed"). The own socket closes when systemd
    re-executes (a package upgrade runs daemon-reexec): then we reconnect. Either way the
    learn ends as usual and the unit is as found."""
    svc = install_service("as-pyapp")
    run(["systemctl", "start", svc.unit], check=True)
    before = snapshot(svc.unit)
    proc = spawn_learn(svc.unit, "--duration", "8s", "--no-validate", "--json", "-q")
    # once the unit runs under our trace, the connection goes
    wait_for(lambda: Path(f"/run/systemd/system/{svc.unit}.d").is_dir() or None,
             timeout=60, what="the trace drop-in")
    time.sleep(2)
    run(disturbance, check=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    assert snapshot(svc.unit) == before, err
    assert unit_property(svc.unit, "ActiveState") == "active"
    assert unit_property("dbus.service", "ActiveState") == "active"
