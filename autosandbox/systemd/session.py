"""What every command that touches a unit shares: root, the unit's lock, signals, a restore
whatever happens, and the unit's own files.

learn, validate, apply, revert and reset each hold a unit through one UnitSession (the same
steps in the same order); all of them read the unit's settings as systemd reads them
(fragment, then drop-ins)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

from autosandbox import interrupts, unitfile
from autosandbox.errors import UserError
from autosandbox.linux.elf import opens_sessions
from autosandbox.systemd import analyze
from autosandbox.systemd.dropins import APPLIED_DROPIN, TRACE_DROPIN, TRIAL_DROPIN, unit_lock
from autosandbox.systemd.instances import is_template
from autosandbox.systemd.manager import ServiceInfo, check_unit_name, current_scope

# When a session's restore runs: "exit" however the body ends (validate: the unit goes back
# after every run), "error" when it raised (learn: the trace restores the unit itself; its
# FIFOs go), "interrupt" on a signal only (apply: a finished apply, healthy or rolled back by
# itself, is not undone; an error that ends it after a signal is an interruption).
RestoreOn = Literal["exit", "error", "interrupt"]

_DROPIN_KINDS = {TRACE_DROPIN: "trace", TRIAL_DROPIN: "trial"}


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("learning a unit needs root (it installs a drop-in and restarts the "
                        "unit): run with sudo")


def check_name(unit: str) -> None:
    """A service's name; a template (NAME@.service) is checked by what resolves it to the
    Accept=yes socket that starts it (learn_target, instances.template_socket)."""
    if not is_template(unit):
        check_unit_name(unit)


class UnitSession:
    """One command's hold on one unit, in one order. Made: root, then the unit's name (before
    anything is asked of systemd). Entered: the unit's lock (one autosandbox per unit), then
    SIGTERM and SIGHUP unwind like Ctrl-C, then `own_dropin` (the runtime drop-in the command
    writes) left by an earlier run is refused. Left: `restore` runs when `restore_on` says,
    shielded (interrupts.py: no signal cuts it short; one that came inside is raised once it
    is done), then the signal handlers and the lock are put back.

    `restore` may be given once what it puts back exists (validate: after its snapshot)."""

    def __init__(self, unit: str, *, own_dropin: Path | None = None,
                 restore: Callable[[], object] | None = None,
                 restore_on: RestoreOn = "exit") -> None:
        require_root()
        check_name(unit)
        self.unit = unit
        self.own_dropin = own_dropin
        self.restore = restore
        self.restore_on = restore_on
        self._held: contextlib.ExitStack | None = None

    def __enter__(self) -> UnitSession:
        with contextlib.ExitStack() as held:
            held.enter_context(unit_lock(self.unit))
            held.callback(interrupts.restore, interrupts.install())
            dropin = self.own_dropin
            if dropin is not None and dropin.exists():
                again = f"autosandbox reset {self.unit}{current_scope().flag()}"
                raise UserError(f"a {_DROPIN_KINDS[dropin.name]} drop-in from an earlier run "
                                f"is still installed ({dropin}): run '{again}' first")
            self._held = held.pop_all()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        held, self._held = self._held, None
        assert held is not None, "a UnitSession is entered once"
        with held:
            if self.restore is not None and self._due(kind):
                with interrupts.shielded():
                    self.restore()

    def _due(self, kind: type[BaseException] | None) -> bool:
        if self.restore_on == "exit":
            return True
        if self.restore_on == "error":
            return kind is not None
        # an error while a signal unwinds us ends the command as interrupted (exit 130,
        # "the unit restored": cli.py), so it restores as the signal would have
        return kind is not None and (issubclass(kind, KeyboardInterrupt)
                                     or bool(interrupts.interrupted()))


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
            if not e.privileged and opens_sessions(e.path)]


def sessions_refusal(unit: str, program: str, traced: bool = False) -> UserError:
    """sshd, cron, vsftpd: the sandbox of the unit would be that of every session it opens
    (an admin's `apt upgrade` over ssh under ProtectSystem=strict, a user's authorized_keys
    under ProtectHome=yes), and a trace sees only the sessions of its window. `traced`: a
    program the trace saw the unit run (the unit was restarted to trace it: not "nothing
    was changed")."""
    done = ("it was traced (restarted, unless its socket or timer starts it) and is as it "
            "was found; nothing learned was kept" if traced else "nothing was changed")
    return UserError(f"{unit} opens users' login sessions ({program} calls pam_open_session): "
                     "a sandbox on it confines every session it starts (a login shell, a cron "
                     f"job, an upload to a home directory), which no trace can foresee; {done} "
                     "(--sessions learns it anyway)")
