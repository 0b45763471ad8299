"""Install a drop-in for good (/etc), with a health check and automatic rollback; revert it;
show what it would change."""

from __future__ import annotations

import contextlib
import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from autosandbox import unitfile
from autosandbox.errors import HealthError, UserError
from autosandbox.systemd.dropins import APPLIED_DROPIN, dropin_path, unit_lock
from autosandbox.systemd.manager import Manager, ServiceInfo, check_unit_name
from autosandbox.trace.unit import existing_settings, require_root, terminate_as_interrupt
from autosandbox.validate.health import Health, HealthChecks, judge

BACKUP_ROOT = Path("/var/lib/autosandbox")


@dataclass
class Applied:
    path: Path
    health: Health
    backup: Path | None


def _state_dir(unit: str) -> Path:
    return BACKUP_ROOT / unit


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".autosandbox-tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(path)


def _restart_and_judge(mgr: Manager, unit: str, service_type: str,
                       checks: HealthChecks) -> Health:
    mgr.reload()
    mgr.reset_failed(unit)
    return judge(mgr, unit, service_type, checks, mgr.restart(unit))


def _installed(unit: str) -> tuple[Manager, ServiceInfo, Path, Path]:
    """What apply and revert work on: systemd, the unit, the /etc drop-in, our backups."""
    require_root()
    check_unit_name(unit)
    mgr = Manager()
    return (mgr, mgr.info(unit), dropin_path(unit, APPLIED_DROPIN, runtime=False),
            _state_dir(unit))


def apply(unit: str, text: str, checks: HealthChecks) -> Applied:
    mgr, info, target, state = _installed(unit)
    with unit_lock(unit), terminate_as_interrupt():
        before = target.read_bytes() if target.exists() else None
        first = not (state / "state.json").exists()
        backup: Path | None = None
        if first:
            state.mkdir(parents=True, exist_ok=True)
            if before is not None:
                backup = state / "previous.conf"
                _write_bytes(backup, before)  # the file we replace, byte for byte
            (state / "state.json").write_text(json.dumps(
                {"unit": unit, "had_previous": before is not None, "path": str(target)}))
        elif (state / "previous.conf").exists():
            backup = state / "previous.conf"
        _write_bytes(target, text.encode("utf-8"))
        health = _restart_and_judge(mgr, unit, info.type, checks)
        if not health.healthy:
            if before is None:
                target.unlink()
                with contextlib.suppress(OSError):
                    target.parent.rmdir()
            else:
                _write_bytes(target, before)
            if first:
                for name in ("state.json", "previous.conf"):
                    with contextlib.suppress(FileNotFoundError):
                        (state / name).unlink()
            back = _restart_and_judge(mgr, unit, info.type, HealthChecks(settle=2))
            raise HealthError(f"{unit} was unhealthy with the drop-in ({health.summary()}); "
                              f"rolled back, the unit is {back.state or 'restored'}")
        if not info.running:
            mgr.stop(unit)
        return Applied(target, health, backup)


def revert(unit: str) -> list[str]:
    mgr, info, target, state = _installed(unit)
    with unit_lock(unit), terminate_as_interrupt():
        meta_file = state / "state.json"
        if not meta_file.exists():
            raise UserError(f"nothing to revert: autosandbox has not applied a drop-in to {unit}")
        meta = json.loads(meta_file.read_text())
        done = []
        if meta.get("had_previous"):
            _write_bytes(target, (state / "previous.conf").read_bytes())
            done.append(f"restored the previous {target}")
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            with contextlib.suppress(OSError):
                target.parent.rmdir()
            done.append(f"removed {target}")
        for name in ("state.json", "previous.conf"):
            with contextlib.suppress(FileNotFoundError):
                (state / name).unlink()
        mgr.reload()
        if info.running:
            mgr.reset_failed(unit)
            done.append(f"restarted {unit}: {mgr.restart(unit)}")
        return done


def diff(unit: str, text: str) -> str:
    check_unit_name(unit)
    mgr = Manager()
    info = mgr.info(unit)
    target = dropin_path(unit, APPLIED_DROPIN, runtime=False)
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    out = list(difflib.unified_diff(current.splitlines(keepends=True),
                                    text.splitlines(keepends=True),
                                    str(target) if current else "/dev/null", str(target)))
    effective = existing_settings(info, target)
    changes = []
    for key, value in unitfile.parse(text):
        was = effective.get(key)
        if was != value:
            changes.append(f"  {key}: {was if was is not None else '(unset)'} -> "
                           f"{value or '(reset)'}")
    summary = [f"{unit}: {len(changes)} setting(s) would change\n"] + [c + "\n" for c in changes]
    return "".join(out) + ("\n" if out else "") + "".join(summary)


def save_learned(unit: str, text: str) -> Path | None:
    """Keep the last learned drop-in for `apply UNIT` and `diff UNIT` without a file."""
    try:
        d = _state_dir(unit)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "learned.conf"
        path.write_text(text, encoding="utf-8")
        return path
    except OSError:
        return None


def load_learned(unit: str) -> str:
    path = _state_dir(unit) / "learned.conf"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise UserError(f"no drop-in given and none learned for {unit} "
                        f"(looked for {path})") from None
