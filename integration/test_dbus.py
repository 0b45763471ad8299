"""Units are read and driven over D-Bus through pydbus, against the real systemd."""

from __future__ import annotations

import os
from typing import Any

import pytest
from systemd_harness import InstallService, wait_for

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
