"""A daemon that chroots (postfix's smtpd, vsftpd, haproxy) names files below its new root:
`/private/smtpd` is /var/spool/postfix/private/smtpd on the host. The profile must hold the
host's path, or the sandbox grants a path nobody uses and denies the one written.
A real program under real strace (and bpftrace for opens where the host has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autosandbox.profile import Profile
from autosandbox.trace.command import trace_command
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.strace_parser import StraceParser
from tests.conftest import PYTHON

CHROOTING = """
import os, sys
root = sys.argv[1]
with open("/etc/hostname") as f:              # the host's, before the chroot
    f.read()
os.chroot(root)
os.chdir("/")
with open("/private/out", "w") as f:          # absolute, below the new root
    f.write("x")
with open("/etc/conf") as f:                  # a copy inside the root, read
    f.read()
with open("/etc/hostname") as f:              # the same name as the host's, another file
    f.read()
os.mkdir("/private/made")
os.rename("/private/out", "private/renamed")  # relative to the cwd, which is the new root
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
@pytest.mark.parametrize("fast", [False, True])
def test_paths_of_a_chrooted_process_are_the_hosts(tmp_path: Path, fast: bool) -> None:
    if fast:
        from autosandbox.trace.tracefs import syscall_tracer_available
        if not syscall_tracer_available():
            pytest.skip("no tracefs here")
    root = tmp_path / "spool"
    (root / "private").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("c")
    (root / "etc" / "hostname").write_text("h")
    result = trace_command([PYTHON, "-c", CHROOTING, str(root)], fast=fast)
    assert result.exit_code == 0
    paths = result.profile.paths
    host = str(root)
    assert "write" in paths.get(f"{host}/private/out", set()), sorted(paths)
    assert "read" in paths.get(f"{host}/etc/conf", set()), sorted(paths)
    # a name opened on the host and again in the chroot is two files (the kernel's report of
    # a path once per name must not swallow the second)
    assert "read" in paths.get("/etc/hostname", set()), sorted(paths)
    assert "read" in paths.get(f"{host}/etc/hostname", set()), sorted(paths)
    assert "mkdir" in paths.get(f"{host}/private/made", set()), sorted(paths)
    assert any(k in paths.get(f"{host}/private/renamed", set()) for k in ("rename", "create")), \
        sorted(paths)
    # nothing recorded under the names as the chrooted process used them
    assert not [p for p in paths if p.startswith(("/private", "/etc/conf"))], sorted(paths)


# -- the kernel's opens are placed by the kernel's facts, not by how far strace's lines came --
# bpftrace and strace report through two streams: under load strace's line of a chroot or a
# chdir may be read after the kernel's record of an open that followed it (seen in CI: a
# chrooted open of /private/out recorded as the host's /private/out).

PID = 377


def kernel_id(path: Path) -> tuple[int, int]:
    """(device in the kernel's encoding, inode), as the BPF program prints them."""
    st = os.stat(path)
    return (os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino)


def recorder() -> tuple[Recorder, StraceParser]:
    return Recorder(Profile(), "/", roots=(PID,), first_is_root=False), StraceParser(READ_CALLS)


def feed(rec: Recorder, parser: StraceParser, line: str) -> None:
    ev = parser.feed(line)
    assert ev is not None
    rec.handle(ev)


def test_an_open_in_a_chroot_waits_for_strace_to_tell_the_chroot(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    (root / "private").mkdir(parents=True)
    rec, parser = recorder()
    # the kernel's record comes first: it cannot be placed yet (it is held, not guessed)
    assert not rec.opened(PID, "/private/out", None, "O_WRONLY|O_CREAT", None,
                          root=kernel_id(root))
    feed(rec, parser, f'{PID} chroot("{root}") = 0')
    assert rec.opened(PID, "/private/out", None, "O_WRONLY|O_CREAT", None,
                      root=kernel_id(root))
    paths = rec.finish(parser).paths
    assert "write" in paths.get(f"{root}/private/out", {}), sorted(paths)
    assert "/private/out" not in paths


def test_an_open_before_a_chroot_is_the_hosts_even_when_read_after_it(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir()
    rec, parser = recorder()
    feed(rec, parser, f'{PID} chroot("{root}") = 0')
    # made before the chroot (the kernel says: strace's root), read after strace's line
    assert rec.opened(PID, str(tmp_path / "conf"), None, "O_RDONLY", None, root=None)
    paths = rec.finish(parser).paths
    assert str(tmp_path / "conf") in paths and not any(p.startswith(f"{root}/") for p in paths)


def test_a_root_no_chroot_of_the_trace_is_never_guessed(tmp_path: Path) -> None:
    """A process whose root is a directory strace saw no chroot into (another's, or one it
    renamed): its opens are not placed anywhere (the learn then fails, see add_kernel_opens)."""
    known, other = tmp_path / "known", tmp_path / "other"
    known.mkdir()
    other.mkdir()
    rec, parser = recorder()
    feed(rec, parser, f'{PID} chroot("{known}") = 0')
    assert not rec.opened(PID, "/etc/shadow", None, "O_WRONLY", None, root=kernel_id(other))


def test_a_relative_open_is_placed_only_in_the_directory_the_kernel_named(tmp_path: Path) -> None:
    """The cwd was not readable (the process exited): the recorder's cwd stands in only if it
    is the directory the open started at; a process that chdir'd since is left out, not
    recorded in the wrong directory."""
    was, now = tmp_path / "was", tmp_path / "now"
    was.mkdir()
    now.mkdir()
    rec, parser = recorder()
    feed(rec, parser, f'{PID} chdir("{now}") = 0')
    assert rec.opened(PID, "secret", None, "O_WRONLY|O_CREAT", None, start_dir=kernel_id(was))
    assert rec.opened(PID, "mine", None, "O_WRONLY|O_CREAT", None, start_dir=kernel_id(now))
    profile = rec.finish(parser)
    assert str(now / "mine") in profile.paths
    assert not [p for p in profile.paths if p.endswith("/secret")], sorted(profile.paths)
    assert any("left out" in w for w in profile.warnings), profile.warnings
