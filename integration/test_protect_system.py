"""A runtime drop-in with ProtectSystem=strict + ReadWritePaths= really confines writes."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import RUNTIME_UNIT_DIR, DropIn, InstalledService, InstallService

UNIT = "as-writeprobe.service"
RESULTS = Path("/var/lib/as-probe/as-writeprobe.json")
RW_DIR = Path("/srv/as-probe-rw")
OUTSIDE_DIRS = [Path("/var/tmp/as-probe-outside"), Path("/opt/as-probe-outside")]


@pytest.fixture
def scratch_dirs() -> Iterator[list[Path]]:
    dirs = [RW_DIR, *OUTSIDE_DIRS]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    yield dirs
    for d in dirs:
        shutil.rmtree(str(d), ignore_errors=True)


def run_probe(svc: InstalledService) -> dict[str, Any]:
    if RESULTS.exists():
        RESULTS.unlink()
    svc.start(UNIT)
    assert svc.prop("Result", UNIT) == "success", svc.diagnostics(UNIT)
    return {r["target"]: r for r in json.loads(RESULTS.read_text())}


def test_protect_system_strict_with_read_write_paths(
        install_service: InstallService, drop_in: DropIn, scratch_dirs: list[Path]) -> None:
    svc = install_service("as-probe")
    inside = RW_DIR / "inside.txt"
    outside = [d / "outside.txt" for d in OUTSIDE_DIRS]
    targets = [inside, *outside]
    drop_in(
        UNIT,
        "10-targets",
        '[Service]\nEnvironment="PROBE_WRITE={}"\n'.format(" ".join(map(str, targets))),
    )

    # Baseline: without sandboxing every write succeeds.
    res = run_probe(svc)
    assert all(res[str(t)]["ok"] for t in targets), res
    for t in targets:
        t.unlink()

    path = drop_in(
        UNIT, "50-sandbox", f"[Service]\nProtectSystem=strict\nReadWritePaths={RW_DIR}\n"
    )
    assert path == RUNTIME_UNIT_DIR / (UNIT + ".d") / "50-sandbox.conf"
    assert str(path) in svc.prop("DropInPaths", UNIT)
    assert svc.prop("ProtectSystem", UNIT) == "strict"
    assert str(RW_DIR) in svc.prop("ReadWritePaths", UNIT).split()

    res = run_probe(svc)
    assert res[str(inside)]["ok"], res
    assert inside.exists()
    for t in outside:
        r = res[str(t)]
        assert not r["ok"], r
        assert r["errno"] == errno.EROFS, r
        assert r["error"] == "EROFS"
        assert not t.exists()
