"""Files a traced service could have prepared where we read (its logs, programs it ran): a FIFO
must not hang learning, a device must not be opened, a symlink of a log must not be followed."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from autosandbox.linux.elf import imported_functions, is_elf32
from autosandbox.linux.files import read_regular
from autosandbox.validate.service_logs import LogWatch

ROOT = os.geteuid() == 0


def _returns(call: Callable[..., object], *args: object) -> tuple[bool, object]:
    """call(*args) in a thread; (True, result) if it returned, (False, None) if it hangs."""
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(call(*args)), daemon=True)
    t.start()
    t.join(60)  # a FIFO without writer blocks open() forever; any return is well within this
    return (not t.is_alive(), box[0] if box else None)


def test_a_fifo_where_a_log_was_is_skipped_not_waited_on(tmp_path: Path) -> None:
    log = tmp_path / "var-log-svc.log"
    log.write_text("started\n")
    watch = LogWatch([str(log)])
    marks = watch.mark()
    log.unlink()
    os.mkfifo(log)
    done, out = _returns(watch.appended, marks)
    assert done and out == {}
    assert _returns(is_elf32, str(log)) == (True, False)
    assert _returns(imported_functions, str(log)) == (True, None)


def test_a_symlinked_log_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("open /etc/shadow: Permission denied\n")
    log = tmp_path / "svc.log"
    log.write_text("")
    watch = LogWatch([str(log)])
    marks = watch.mark()
    log.unlink()
    log.symlink_to(secret)
    assert watch.appended(marks) == {}
    log.unlink()
    log.write_text("x\nopen /srv/data: Permission denied\n")  # its own file is read
    assert watch.appended(marks) == {str(log): ["x", "open /srv/data: Permission denied"]}


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_a_device_node_is_never_opened(tmp_path: Path) -> None:
    node = tmp_path / "zero"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: reads never end
    assert read_regular(str(node), 1 << 20) is None
    assert imported_functions(str(node)) is None


def test_a_regular_file_is_read_from_the_offset_or_from_its_start_if_shorter(
        tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    assert read_regular(str(f), 4, 3) == b"3456"
    assert read_regular(str(f), 4, 50) == b"0123"  # truncated or rotated since the mark
