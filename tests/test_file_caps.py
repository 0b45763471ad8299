"""An executable with file capabilities (squid's pinger: cap_net_raw+ep) loses them under
NoNewPrivileges=yes: seen in the container, the applied sandbox made squid log "Open
icmp_sock: (1) Operation not permitted" and "FATAL: pinger" to its own log while its health
check passed. Executing one must keep NoNewPrivileges= out of the sandbox.
A real program under real strace; the capability is set as setcap(8) sets it."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from autosandbox.trace.command import trace_command
from tests.conftest import PYTHON, sandbox_for

CAP_NET_RAW = 13
VFS_CAP_REVISION_2, VFS_CAP_FLAGS_EFFECTIVE = 0x02000000, 0x000001

RUN = "import subprocess, sys; subprocess.run([sys.argv[1]], check=True)"


def _setcap_net_raw(path: Path) -> None:
    # struct vfs_cap_data (linux/capability.h), little-endian: cap_net_raw+ep
    blob = struct.pack("<IIIII", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
                       1 << CAP_NET_RAW, 0, 0, 0)
    os.setxattr(path, "security.capability", blob)


@pytest.mark.skipif(os.geteuid() != 0, reason="setting file capabilities needs root")
def test_executing_a_binary_with_file_capabilities_keeps_no_new_privileges_off(
        tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copy("/bin/true", plain)
    capable = tmp_path / "capable"
    shutil.copy("/bin/true", capable)
    try:
        _setcap_net_raw(capable)
    except OSError as exc:
        pytest.skip(f"this file system keeps no file capabilities: {exc}")
    without = trace_command([PYTHON, "-c", RUN, str(plain)], fast=False).profile
    assert "filecap_exec" not in without.flags
    assert sandbox_for(without).values("NoNewPrivileges") == ["yes"]
    with_caps = trace_command([PYTHON, "-c", RUN, str(capable)], fast=False).profile
    assert str(capable) in with_caps.flags["filecap_exec"].examples
    sb = sandbox_for(with_caps)
    assert sb.values("NoNewPrivileges") is None
    assert any(o.directive == "NoNewPrivileges" and "file capabilities" in o.why
               for o in sb.omitted), sb.omitted
