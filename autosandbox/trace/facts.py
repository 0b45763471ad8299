"""Facts about the host, read when tracing ends, so that synthesis is a pure function of the
profile: what each path the service touched is (lstat, not followed), who owns it, its mode,
where a symlink leads, whether an executed binary is a 32-bit ELF and whether it opens
login sessions, and which written files logrotate renames. What processes running as root
wrote, against these facts, shows the DAC capabilities they needed (trace/dac.py)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from autosandbox.linux.elf import is_elf32, opens_sessions
from autosandbox.linux.logrotate import rotated_files
from autosandbox.linux.mounts import host_mounts
from autosandbox.profile import Fact, Profile
from autosandbox.trace.dac import infer_root_writes


def fact(path: str) -> Fact:
    """What lstat says of `path` now; a symlink also says where it resolves."""
    return Fact.of_host(path)


def _ancestors(path: str) -> Iterable[str]:
    while True:
        parent = os.path.dirname(path)
        if parent == path or not parent:  # "/" (or "//", which POSIX keeps apart)
            return
        path = parent
        yield path


def _is_file_path(path: str) -> bool:
    # failed_paths also holds "socket:AF_X", "bind:tcp:80", "syscall:N"; unix_sockets "@name"
    return path.startswith("/")


def record_facts(profile: Profile) -> None:
    """Fill profile.facts for every path, failed path, executed binary, PathGroup directory,
    unix socket file and every ancestor of a written path; mark 32-bit and session-opening
    executables; add the
    capabilities root's writes needed by these facts, each with its evidence."""
    wanted: set[str] = set()
    wanted.update(p for p in profile.paths if _is_file_path(p))
    wanted.update(p for p in profile.failed_paths if _is_file_path(p))
    wanted.update(p for p in profile.unix_sockets if _is_file_path(p))
    wanted.update(profile.execs)
    for d in profile.path_groups:
        wanted.add(d)
        wanted.update(_ancestors(d))
    for path in profile.written_paths():
        wanted.update(_ancestors(path))
    facts = profile.facts
    for path in sorted(wanted):
        if path not in facts:
            facts[path] = fact(path)
    profile.mounts = host_mounts()
    rotated = rotated_files()
    for path in profile.written_paths():
        real = os.path.realpath(path)
        if real in rotated:
            profile.rotated[path] = rotated[real]
    for path, bits in profile.execs.items():
        bits["elf32"] = is_elf32(path)
        bits["sessions"] = opens_sessions(path)
    for cap, evidence in infer_root_writes(profile).items():
        for text in evidence:
            profile.add_cap(cap, text)
