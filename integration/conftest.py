"""pytest configuration for the integration tests against a real systemd.

These tests need systemd as PID 1 and root. They are meant to run inside the throw-away
machines started by integration/run-container (systemd-nspawn) and integration/run-vm
(qemu), or in the Vagrant box (Vagrantfile). Anywhere else every test is skipped.
Tests marked ``vm`` additionally need a full (virtual) machine: audit, BPF cgroup
firewalling (IPAddressDeny=) and similar do not work in a container; they are skipped
inside containers.

Helpers live in systemd_harness.py (a unique module name, so they do not clash with
another conftest.py); only the standard library is imported at module level.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from systemd_harness import (
    HERE,
    RUNTIME_UNIT_DIR,
    SERVICES_DIR,
    UNIT_DIR,
    VM_HINT,
    DropIn,
    InstalledService,
    InstallService,
    Sh,
    _managed_dirs,
    _remove,
    daemon_reload,
    in_container,
    run,
    skip_reason_for_host,
)


# --------------------------------------------------------------------------- pytest hooks
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vm: needs a full VM (audit, BPF); skipped inside containers"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = str(HERE)
    ours = [i for i in items if str(i.fspath).startswith(here)]
    if not ours:
        return
    reason = skip_reason_for_host()
    if reason:
        marker = pytest.mark.skip(reason=reason)
        for item in ours:
            item.add_marker(marker)
        return
    if in_container():
        vm_skip = pytest.mark.skip(reason=f"needs a full VM, not a container ({VM_HINT})")
        for item in ours:
            if "vm" in item.keywords:
                item.add_marker(vm_skip)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def sh() -> Sh:
    """The run() helper: sh(cmd, check=False, timeout=120) -> CompletedProcess."""
    return run


@pytest.fixture
def install_service() -> Iterator[InstallService]:
    """Factory: install_service("as-nginx") copies integration/services/as-nginx/*.service
    (and other unit files) to /etc/systemd/system/ and root/** to /, daemon-reloads and
    returns an InstalledService. Teardown: stop, remove every created file, the unit's
    StateDirectory=/LogsDirectory=/..., runtime drop-ins, reset-failed, daemon-reload.
    """
    installed: list[tuple[InstalledService, list[Path]]] = []

    def _install(name: str) -> InstalledService:
        src = SERVICES_DIR / name
        if not src.is_dir():
            raise ValueError(f"no example service {name!r} in {SERVICES_DIR}")
        unit_files = sorted(
            p
            for p in src.iterdir()
            if p.is_file() and p.suffix in (".service", ".socket", ".timer", ".path", ".target")
        )
        created: list[str] = []
        svc = InstalledService(name, [p.name for p in unit_files], created)
        installed.append((svc, unit_files))
        root = src / "root"
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(str(root)):
                rel = os.path.relpath(dirpath, str(root))
                dest_dir = Path("/") / rel if rel != "." else Path("/")
                for d in dirnames:
                    dest = dest_dir / d
                    if not dest.exists():
                        dest.mkdir(mode=0o755)
                        created.append(str(dest))
                for f in filenames:
                    dest = dest_dir / f
                    if not dest.exists():
                        created.append(str(dest))
                    shutil.copyfile(os.path.join(dirpath, f), str(dest))
                    os.chmod(str(dest), 0o755 if f.endswith((".py", ".sh")) else 0o644)
        for uf in unit_files:
            dest = UNIT_DIR / uf.name
            shutil.copyfile(str(uf), str(dest))
            created.append(str(dest))
        daemon_reload()
        return svc

    yield _install

    reload_needed = False
    for svc, unit_files in reversed(installed):
        for uf in unit_files:
            run(["systemctl", "stop", uf.name], timeout=90)
            run(["systemctl", "reset-failed", uf.name])
        for uf in unit_files:
            for d in _managed_dirs(uf):
                _remove(d)
            _remove(RUNTIME_UNIT_DIR / (uf.name + ".d"))
        # files first, then directories deepest-first
        for path in sorted(svc.files, key=lambda p: (Path(p).is_dir(), -p.count("/"))):
            _remove(path)
        reload_needed = True
    if reload_needed:
        daemon_reload()


@pytest.fixture
def drop_in() -> Iterator[DropIn]:
    """Factory: drop_in(unit, name, text, runtime=True) writes
    /run/systemd/system/UNIT.d/NAME.conf (or /etc/... when runtime=False), daemon-reloads,
    and returns the path. Teardown removes the files and daemon-reloads."""
    created: list[Path] = []

    def _drop_in(unit: str, name: str, text: str, runtime: bool = True) -> Path:
        base = RUNTIME_UNIT_DIR if runtime else UNIT_DIR
        d = base / (unit + ".d")
        if not d.exists():
            d.mkdir(parents=True)
            created.append(d)
        path = d / (name if name.endswith(".conf") else name + ".conf")
        path.write_text(text)
        created.append(path)
        daemon_reload()
        return path

    yield _drop_in

    if created:
        for p in reversed(created):
            _remove(p)
        daemon_reload()
