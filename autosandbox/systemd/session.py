"""What every command that touches a unit shares: root, signals, and the unit's own files.

learn, validate, apply, revert and reset all run as root, unwind on SIGTERM/SIGHUP as on
Ctrl-C, and read the unit's settings as systemd reads them (fragment, then drop-ins)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from autosandbox import interrupts, unitfile
from autosandbox.errors import UserError
from autosandbox.linux.elf import opens_sessions
from autosandbox.systemd import analyze
from autosandbox.systemd.dropins import APPLIED_DROPIN
from autosandbox.systemd.manager import ServiceInfo


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("learning a unit needs root (it installs a drop-in and restarts the "
                        "unit): run with sudo")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the unit is always restored (interrupts.py:
    a second signal does not cut the restore)."""
    old = interrupts.install()
    try:
        yield
    finally:
        interrupts.restore(old)


def _unit_files(info: ServiceInfo, exclude: Path) -> Iterator[tuple[str, str]]:
    """(path, text) of the unit's own files as systemd reads them: fragment, then drop-ins."""
    for path in [info.fragment_path, *info.dropin_paths]:
        if not path or Path(path) == exclude:
            continue
        try:
            yield path, Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue


def existing_settings(info: ServiceInfo, exclude: Path) -> dict[str, str]:
    """Directives the unit's own files set (fragment, then drop-ins; last one wins)."""
    out: dict[str, str] = {}
    for _, text in _unit_files(info, exclude):
        for key, value in unitfile.parse(text):
            if value:
                out[key] = value
            else:
                out.pop(key, None)
    return out


def unit_text(info: ServiceInfo, exclude: Path) -> str:
    """The unit as systemd reads it (fragment plus drop-ins), for offline checks; the place
    `apply`'s drop-in takes among the drop-ins (by file name) is marked (analyze.merged)."""
    parts = []
    slot = False
    for path, text in _unit_files(info, exclude):
        name = Path(path).name
        if path != info.fragment_path and not slot and name >= APPLIED_DROPIN:
            slot = True
            ours = name == APPLIED_DROPIN  # applied earlier: the new one replaces it
            parts += [analyze.SLOT_BEGIN, *([text] if ours else []), analyze.SLOT_END]
            if ours:
                continue
        parts.append(text)
    if not slot:
        parts += [analyze.SLOT_BEGIN, analyze.SLOT_END]
    return "\n".join(parts)


def session_programs(info: ServiceInfo) -> list[str]:
    """The unit's sandboxed programs (not `+` lines) that open users' login sessions."""
    return [e.path for e in info.exec_lines
            if "privileged" not in e.flags and opens_sessions(e.path)]


def sessions_refusal(unit: str, program: str) -> UserError:
    """sshd, cron, vsftpd: the sandbox of the unit would be that of every session it opens
    (an admin's `apt upgrade` over ssh under ProtectSystem=strict, a user's authorized_keys
    under ProtectHome=yes), and a trace sees only the sessions of its window."""
    return UserError(f"{unit} opens users' login sessions ({program} calls pam_open_session): "
                     "a sandbox on it confines every session it starts (a login shell, a cron "
                     "job, an upload to a home directory), which no trace can foresee; nothing "
                     "was changed (--sessions learns it anyway)")
