"""Drop-in files: runtime ones under /run (gone at reboot) and persistent ones under /etc."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from autosandbox.errors import UserError

RUN_DIR = Path("/run/systemd/system")
ETC_DIR = Path("/etc/systemd/system")
STATE_DIR = Path("/run/autosandbox")
TRACE_DROPIN = "zz-autosandbox-trace.conf"  # zz: applied after every other drop-in
TRIAL_DROPIN = "zz-autosandbox-trial.conf"
APPLIED_DROPIN = "50-autosandbox.conf"


def dropin_path(unit: str, name: str, runtime: bool = True) -> Path:
    return (RUN_DIR if runtime else ETC_DIR) / f"{unit}.d" / name


def write_dropin(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    tmp.replace(path)


def remove_dropin(path: Path) -> bool:
    """Remove a drop-in and its directory if that is now empty. True if something was removed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return True


def unit_state_dir(unit: str) -> Path:
    d = STATE_DIR / unit
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE_DIR, 0o711)
    os.chmod(d, 0o711)
    return d


@contextlib.contextmanager
def unit_lock(unit: str) -> Iterator[None]:
    """One autosandbox at a time per unit (learn, validate, apply, revert, reset)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = STATE_DIR / f"{unit}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another autosandbox is already working on {unit}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
