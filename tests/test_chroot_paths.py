"""A daemon that chroots (postfix's smtpd, vsftpd, haproxy) names files below its new root:
`/private/smtpd` is /var/spool/postfix/private/smtpd on the host. The profile must hold the
host's path, or the sandbox grants a path nobody uses and denies the one written.
A real program under real strace (and bpftrace for opens where the host has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autosandbox.trace.command import trace_command
from tests.conftest import PYTHON

CHROOTING = """
import os, sys
root = sys.argv[1]
os.chroot(root)
os.chdir("/")
with open("/private/out", "w") as f:          # absolute, below the new root
    f.write("x")
with open("/etc/conf") as f:                  # a copy inside the root, read
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
    result = trace_command([PYTHON, "-c", CHROOTING, str(root)], fast=fast)
    assert result.exit_code == 0
    paths = result.profile.paths
    host = str(root)
    assert "write" in paths.get(f"{host}/private/out", set()), sorted(paths)
    assert "read" in paths.get(f"{host}/etc/conf", set()), sorted(paths)
    assert "mkdir" in paths.get(f"{host}/private/made", set()), sorted(paths)
    assert any(k in paths.get(f"{host}/private/renamed", set()) for k in ("rename", "create")), \
        sorted(paths)
    # nothing recorded under the names as the chrooted process used them
    assert not [p for p in paths if p.startswith(("/private", "/etc/conf"))], sorted(paths)
