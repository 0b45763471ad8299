"""Reading files whose path a traced service could have prepared (its logs, the programs it ran).

A service may put a FIFO where we read (open() would block until a writer comes: learning
hangs with a trial's sandbox installed), a device node (opening one can act: a tape rewinds),
or a symlink to a file of root's. The path is opened O_PATH (which opens nothing for real),
checked to be a regular file, and only then opened for reading through that very inode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from autosandbox.errors import UserError
from autosandbox.linux.mounts import superblock_device


def read_regular(path: str, limit: int, offset: int = 0, follow: bool = True) -> bytes | None:
    """Up to `limit` bytes from `offset` (from the start if the file is shorter than that: it
    was truncated or rotated); None unless `path` is a regular file we can read. `follow`:
    False refuses a symlink as the last component."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    finally:
        os.close(fd)
    with contextlib.closing(os.fdopen(rfd, "rb")) as f:
        try:
            size = os.fstat(rfd).st_size
            f.seek(offset if size >= offset else 0)
            return f.read(limit)
        except OSError:
            return None


def kernel_device(kdev: int) -> int:
    """A dev_t as the kernel holds it (major << 20 | minor) in stat(2)'s encoding."""
    return os.makedev(kdev >> 20, kdev & 0xFFFFF)


def is_inode(path: str, kdev: int, ino: int) -> bool:
    """Whether `path` (followed) is the inode the kernel named by its superblock's device
    (`kdev`, the kernel's encoding) and number. stat(2) shows a btrfs subvolume's own device,
    not the superblock's: then the device of the mount `path` is on must be it."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_ino != ino:
        return False
    dev = kernel_device(kdev)
    return st.st_dev == dev or superblock_device(path) == dev


def write_output(path: Path, data: bytes) -> None:
    """Write a file the user named (a profile, a drop-in) whole, as root, in a directory another
    user may write to (a home, a project directory): the temporary file has a random name and
    is created exclusively, never through a symlink planted there; it is renamed over `path`
    within the directory opened once, so a swapped path leads nowhere else. A file already there
    keeps its mode and owner; a symlink or anything else not a regular file there is refused.
    One line (UserError) if it cannot be done."""
    try:
        dfd = os.open(path.absolute().parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    try:
        try:
            old: os.stat_result | None = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and not stat.S_ISREG(old.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(old.st_mode) else "not a regular file"
            raise UserError(f"cannot write {path}: it is {what} (give a regular file's path)")
        tmp = f".autosandbox-{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dfd)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if old is not None:
                    os.fchown(fd, old.st_uid, old.st_gid)
                    os.fchmod(fd, stat.S_IMODE(old.st_mode))  # after fchown: it clears set-id
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise UserError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(dfd)
