"""Drop-in files: runtime ones under /run (gone at reboot) and persistent ones under /etc."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
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
    """Write a runtime drop-in, on record first (runstate) so `reset` finds it after a kill."""
    from autosandbox.systemd import runstate  # runstate builds on this module

    runstate.record("dropin", path=str(path))
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


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
    """/run/autosandbox/UNIT (0711: the service's user reaches its FIFOs by name only)."""
    d = STATE_DIR / unit
    try:
        for path in (STATE_DIR, d):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o711)
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                raise UserError(f"{path} is not root's own directory: refusing to use it")
            os.chmod(path, 0o711)
    except OSError as exc:
        raise UserError(f"cannot create {d}: {exc.strerror}") from None
    return d


@contextlib.contextmanager
def unit_lock(unit: str) -> Iterator[None]:
    """One autosandbox at a time per unit (learn, validate, apply, revert, reset)."""
    lock = STATE_DIR / f"{unit}.lock"
    try:
        STATE_DIR.mkdir(mode=0o711, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UserError(f"cannot create {lock}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another autosandbox is already working on {unit}") from None
        with contextlib.suppress(OSError):  # who holds it, for a human; /run may be full
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
