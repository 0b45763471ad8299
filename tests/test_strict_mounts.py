"""ProtectSystem=strict and the host's separate file systems: systemd 252 leaves them
writable when ProtectKernelTunables=, ProtectControlGroups= or ProtectProc= is set (measured
in the integration VM and container: `systemd-run -p ProtectSystem=strict -p
ProtectKernelTunables=yes touch /run/x` succeeds, and the service could write
/run/systemd/system/). Synthesis covers them with ReadOnlyPaths=, from the mounts recorded at
trace time; hand-built profiles, nothing here reads the host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from autosandbox.linux.mounts import mount_devices, parse_mountinfo, superblock_device
from autosandbox.profile import Fact
from autosandbox.synth import sensitive
from autosandbox.synth.model import Sandbox
from autosandbox.validate.candidate import parse_candidate
from autosandbox.validate.relax import relax_row
from tests.synth_profiles import synth, touch, unit_profile

# /run's runtime configuration, read-only when strict leaves /run writable
RUN_CONFIG = sorted(f"-{g}" for g in sensitive.RUNTIME_CONFIG)

MOUNTS = {"/": "ext4", "/run": "tmpfs", "/run/lock": "tmpfs", "/boot": "ext4", "/proc": "proc",
          "/sys": "sysfs", "/dev": "devtmpfs", "/dev/shm": "tmpfs", "/tmp": "tmpfs",
          "/home": "ext4", "/mnt/nfs": "nfs4", "/media/usb": "fuseblk", "/srv/data": "xfs"}
DIR = Fact("dir", 0, 0, 0o755)


def _ro(sb: Sandbox) -> list[str]:
    return sb.values("ReadOnlyPaths") or []


def test_every_local_separate_file_system_is_covered() -> None:
    p = unit_profile("web.service")
    p.mounts = dict(MOUNTS)
    sb = synth(p)
    assert sb.values("ProtectSystem") == ["strict"]
    # the topmost of each tree; not the API file systems, /tmp, homes, network or FUSE
    assert _ro(sb) == ["-/boot", "-/run", "-/srv/data"]


def test_a_grant_inside_a_file_system_is_more_specific_one_of_it_excludes_it() -> None:
    p = unit_profile("web.service")
    p.mounts = dict(MOUNTS)
    touch(p, "/srv/data/upload/x", "create", "write")
    p.facts["/srv/data/upload"] = DIR
    sb = synth(p)
    assert "/srv/data/upload" in (sb.values("ReadWritePaths") or [])
    assert "-/srv/data" in _ro(sb)  # read-only but for the grant below it (systemd: the
    # more specific path decides)
    p2 = unit_profile("web.service", unit_lines=("ReadWritePaths=-/srv/data",))
    p2.mounts = dict(MOUNTS)
    assert "-/srv/data" not in _ro(synth(p2))  # the unit's own grant of all of it stays


def test_one_it_creates_files_directly_in_is_left_and_said() -> None:
    p = unit_profile("nginx.service")
    p.mounts = dict(MOUNTS)
    touch(p, "/run/nginx.pid", "create", "write", "delete")
    p.facts["/run"] = DIR
    sb = synth(p)
    # only /run itself is left, not the runtime configuration root's tools load from it
    # (runtime units in /run/systemd/system: what covering /run was for)
    assert _ro(sb) == ["-/boot", "-/run/lock", "-/srv/data", *RUN_CONFIG]
    ro = next(s for s in sb.settings if s.directive == "ReadOnlyPaths")
    assert "/run (it writes /run/nginx.pid there)" in ro.evidence
    assert "runtime units in /run/systemd" in ro.evidence
    # a service that writes below one of them keeps it writable (the trace saw it)
    touch(p, "/run/systemd/ask-password/ask.x1", "create", "write")
    assert "-/run/systemd" not in _ro(synth(p))
    # what is withheld there is not read-only for all that: said (helper, squid: Withheld
    # /run, "writable_anyway": false, while its namespace had /run read-write)
    assert [w.path for w in sb.withheld] == ["/run"]
    assert sb.to_json()["withheld"][0]["writable_anyway"] is True  # type: ignore[index]
    assert "Yet writable all the same under ProtectSystem=strict (which leaves /run " \
        "writable): /run" in sb.render().replace("\n# ", " ")


def test_relaxing_protect_system_drops_them() -> None:
    p = unit_profile("web.service")
    p.mounts = dict(MOUNTS)
    sb = synth(p)
    sb, rel = relax_row(sb, "ProtectSystem", 3, "bisection")
    assert rel is not None and sb.values("ProtectSystem") == ["full"]
    assert sb.values("ReadOnlyPaths") is None  # full leaves /run writable by design


def test_the_candidate_reader_takes_them() -> None:
    text = "[Service]\nProtectSystem=strict\nReadOnlyPaths=-/run -/boot\n"
    assert parse_candidate(text, "web.service").values("ReadOnlyPaths") == ["-/run", "-/boot"]


def test_mountinfo() -> None:
    line = ("36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root "
            "rw,errors=continue\n"
            "37 35 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw\n"
            "38 37 0:26 / /run rw - tmpfs tmpfs rw\n")  # mounted over: the last one is seen
    assert parse_mountinfo(line) == {"/mnt/my disk": "ext3", "/run": "tmpfs"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a mount)")
def test_a_mount_made_a_moment_ago_is_known(tmp_path: Path) -> None:
    """The kernel names a relative open's directory by its superblock's device: a mount made
    just before a trace must be in the table at once (a table cached for a second missed one,
    and the btrfs test's relative opens were dropped on a loaded machine)."""
    assert superblock_device(str(tmp_path)) is not None  # the table is read now
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp_path)], check=True)
    try:
        mine = mount_devices(Path("/proc/self/mountinfo").read_text())[str(tmp_path)]
        assert superblock_device(str(tmp_path)) == mine
    finally:
        subprocess.run(["umount", str(tmp_path)], check=True)
    assert superblock_device(str(tmp_path)) != mine
