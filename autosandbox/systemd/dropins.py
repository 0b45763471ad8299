"""Drop-in files: runtime ones under /run (gone at reboot) and persistent ones under /etc; of a
user's manager under /run/user/UID/systemd/user and ~/.config/systemd/user, written as that
user (what `systemctl edit --user` would make, and no path the user controls is followed as
root), every directory we create there removed again with our file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from autosandbox.errors import UserError
from autosandbox.systemd.manager import current_scope

STATE_DIR = Path("/run/autosandbox")
TRACE_DROPIN = "zz-autosandbox-trace.conf"  # zz: applied after every other drop-in
TRIAL_DROPIN = "zz-autosandbox-trial.conf"
APPLIED_DROPIN = "50-autosandbox.conf"


def dropin_path(unit: str, name: str, runtime: bool = True) -> Path:
    scope = current_scope()
    return (scope.runtime_dir if runtime else scope.config_dir) / f"{unit}.d" / name


def missing_dirs(path: Path) -> list[str]:
    """The directories above `path` that do not exist yet, outermost first: what writing it
    creates, and so what removing it must remove again."""
    out: list[str] = []
    d = path.parent
    while not d.exists() and d != d.parent:
        out.append(str(d))
        d = d.parent
    return out[::-1]


def write_file(path: Path, data: bytes, mode: int = 0o644,
               owner: tuple[int, int] | None = None) -> None:
    """Write `path` whole (a temporary file renamed over it), creating its directories; in a
    user's manager as that user. `owner` (uid, gid): given to the file before it takes the
    place of the old one (a restored file keeps who may read it). OSError as raised."""
    def write() -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".autosandbox-tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            try:
                os.write(fd, data)
                if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != owner:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)  # after fchown, which clears set-id bits
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True
    _as_owner(path, write)


def file_attrs(path: Path) -> dict[str, int]:
    """The mode and owner of a file we replace, as its backup and restore keep them."""
    st = path.stat()
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def write_like(path: Path, data: bytes, attrs: dict[str, int] | None) -> None:
    """write_file with the mode and owner of `attrs` (file_attrs of what was there); none
    recorded (a record of an older version): 0644 and the writer's own."""
    if not attrs:
        write_file(path, data)
        return
    owner = (attrs["uid"], attrs["gid"]) if "uid" in attrs and "gid" in attrs else None
    write_file(path, data, attrs.get("mode", 0o644), owner)


def remove_file(path: Path, created: list[str] | tuple[str, ...] = ()) -> bool:
    """Remove `path`, its directory if now empty, and then each directory of `created` (those
    writing it made) that is empty. True if the file was there."""
    def remove() -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        finally:
            for d in [str(path.parent), *reversed(created)]:
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        return True
    return _as_owner(path, remove)


def _as_owner(path: Path, action: Callable[[], bool]) -> bool:
    """Run `action` as root, or in a child with the user's uid and groups when `path` is in
    the user's own directories (home, runtime dir)."""
    scope = current_scope()
    if scope.uid is None or os.geteuid() != 0 or not (
            path.is_relative_to(scope.home) or path.is_relative_to(f"/run/user/{scope.uid}")):
        return action()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit (no cleanup of the parent's)
        code = 0
        try:
            os.close(r)
            os.setgroups(os.getgrouplist(scope.user, scope.gid))
            os.setresgid(scope.gid, scope.gid, scope.gid)
            os.setresuid(scope.uid, scope.uid, scope.uid)
            code = 0 if action() else 3
        except OSError as exc:
            os.write(w, f"{exc.errno or 0}\0{exc.filename or ''}".encode())
            code = 1
        except BaseException:
            code = 2
        os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            said = f.read()
    finally:
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 1:
        errno_text, _, name = said.decode(errors="replace").partition("\0")
        err = int(errno_text) if errno_text.isdigit() else 0
        raise OSError(err, os.strerror(err), name or str(path))
    if code not in (0, 3):
        raise OSError(0, f"writing as {scope.user} failed (exit {code})", str(path))
    return code == 0


def write_dropin(path: Path, text: str) -> None:
    """Write a runtime drop-in, on record first (runstate) so `reset` finds it after a kill."""
    from autosandbox.systemd import runstate  # runstate builds on this module

    created = _created.setdefault(str(path), [])  # a rewrite keeps what the first made
    created += [d for d in missing_dirs(path) if d not in created]
    runstate.record("dropin", path=str(path), created=created)
    try:
        write_file(path, text.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


_created: dict[str, list[str]] = {}  # runtime drop-in -> the directories writing it created


def remove_dropin(path: Path, created: list[str] | tuple[str, ...] | None = None) -> bool:
    """Remove a drop-in and its directory if that is now empty (and the directories writing
    it created). True if something was removed."""
    dirs = _created.pop(str(path), []) if created is None else list(created)
    return remove_file(path, dirs)


def unit_state_dir(unit: str) -> Path:
    """/run/autosandbox/UNIT (0711: the service's user reaches its FIFOs by name only)."""
    d = state_dir_of(unit)
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


def state_dir_of(unit: str) -> Path:
    """Our runtime state of `unit` in the current manager (scope key: a user's units apart)."""
    return STATE_DIR / current_scope().key(unit)


@contextlib.contextmanager
def unit_lock(unit: str) -> Iterator[None]:
    """One autosandbox at a time per unit (learn, validate, apply, revert, reset)."""
    lock = STATE_DIR / f"{current_scope().key(unit)}.lock"
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
