"""(VM only) IPAddressDeny=any in a runtime drop-in makes connect() fail."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import DropIn, InstalledService, InstallService, wait_for

pytestmark = pytest.mark.vm

UNIT = "as-netprobe.service"
RESULTS = Path("/var/lib/as-probe/as-netprobe.json")
TARGET = "127.0.0.1:8082"


def health() -> int | None:
    try:
        with urllib.request.urlopen(f"http://{TARGET}/health", timeout=3) as r:
            status: int = r.status
            return status
    except OSError:
        return None


def run_probe(svc: InstalledService) -> Any:
    if RESULTS.exists():
        RESULTS.unlink()
    svc.start(UNIT)
    assert svc.prop("Result", UNIT) == "success", svc.diagnostics(UNIT)
    return json.loads(RESULTS.read_text())[0]


def test_ip_address_deny_blocks_connect(install_service: InstallService, drop_in: DropIn) -> None:
    app = install_service("as-pyapp")
    app.start()
    wait_for(lambda: health() == 200, what="pyapp on :8082")
    probe = install_service("as-probe")
    drop_in(UNIT, "10-target", f"[Service]\nEnvironment=PROBE_CONNECT={TARGET}\n")

    r = run_probe(probe)
    assert r["ok"], r

    drop_in(UNIT, "50-deny", "[Service]\nIPAddressDeny=any\n")
    assert probe.prop("IPAddressDeny", UNIT) != ""
    r = run_probe(probe)
    print("connect under IPAddressDeny=any:", r)  # shown with -rA
    assert not r["ok"], r
    assert r["error"] in ("EPERM", "ETIMEDOUT") or "timed out" in r.get("message", ""), r
    # The server is still reachable from outside the sandboxed unit.
    assert health() == 200
