"""Install a drop-in for good (/etc), with a health check and automatic rollback; revert it;
show what it would change."""

from __future__ import annotations

import contextlib
import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from autosandbox import interrupts, unitfile
from autosandbox.errors import HealthError, UserError
from autosandbox.systemd import runstate
from autosandbox.systemd.cgroup import Proc, found_members, stop_ending_leftovers
from autosandbox.systemd.dropins import (
    APPLIED_DROPIN,
    dropin_path,
    file_attrs,
    missing_dirs,
    remove_file,
    write_file,
    write_like,
)
from autosandbox.systemd.instances import accepted, template_info, template_socket
from autosandbox.systemd.journal import journal_cursor, journal_lines, run_lines
from autosandbox.systemd.manager import (
    Manager,
    ServiceInfo,
    current_scope,
    template_of,
)
from autosandbox.systemd.session import UnitSession, check_name, existing_settings
from autosandbox.validate.candidate import read_candidate
from autosandbox.validate.denials import parse_denials
from autosandbox.validate.health import Health, HealthChecks, judge
from autosandbox.validate.perconn import connection_trial, require_connections
from autosandbox.validate.snapshot import (
    Change,
    Snapshot,
    directories_of,
    paths_to_watch,
    restore,
)
from autosandbox.validate.trials import verdict

BACKUP_ROOT = Path("/var/lib/autosandbox")


@dataclass
class Applied:
    path: Path
    health: Health
    backup: Path | None


def _state_dir(unit: str) -> Path:
    return BACKUP_ROOT / current_scope().key(unit)


def _write_bytes(path: Path, data: bytes) -> None:
    """A file of our own (in a user's home: as that user, dropins.write_file); a file we
    replace or put back keeps its mode and owner instead (write_like)."""
    write_file(path, data, 0o644)


def _restart_and_judge(mgr: Manager, unit: str, service_type: str,
                       checks: HealthChecks, socket: str | None = None,
                       found: set[Proc] | None = None) -> Health:
    """`socket`: `unit` is a template it starts per connection: nothing is restarted; the
    checks' connections start instances with the new drop-in, and those are judged.
    `found`: the unit's processes before we changed it: a roll-back ends any other one the
    stop leaves (the drop-in's sandbox on it)."""
    mgr.reload()
    interrupts.pause_for_tests("dropin-loaded")
    if socket is not None:
        health, out = connection_trial(checks, unit, socket, journal_cursor(),
                                       lambda: accepted(mgr, socket))
        for name in out.started:  # a failed instance is no lasting state of ours
            if out.ended.get(name, "success") != "success":
                mgr.reset_failed(name)
        return health
    mgr.reset_failed(unit)
    if found is not None:
        stop_ending_leftovers(mgr, unit, found)
        return judge(mgr, unit, service_type, checks, mgr.start(unit))
    return judge(mgr, unit, service_type, checks, mgr.restart(unit))


def _installed(unit: str, template: bool = False) -> tuple[Manager, ServiceInfo, Path, Path]:
    """What apply, revert and diff work on (they check its name first): systemd, the unit,
    the /etc drop-in, our backups. `template`: the drop-in and backups are those of every
    instance of the unit's template. A template started per connection (NAME@.service of an
    Accept=yes socket) is named as such: its info is the template's."""
    mgr = Manager()
    if template_socket(mgr, unit) is not None:
        return (mgr, template_info(mgr, unit), dropin_path(unit, APPLIED_DROPIN, runtime=False),
                _state_dir(unit))
    where = template_of(unit) if template else unit
    return (mgr, mgr.info(unit), dropin_path(where, APPLIED_DROPIN, runtime=False),
            _state_dir(where))


def check_applicable(unit: str, text: str, force: bool = False) -> None:
    """Only what autosandbox writes, and (unless forced) only what was validated on `unit`."""
    cand = read_candidate(text, unit)  # refuses anything but sandboxing directives
    if force:
        return
    if cand.status != "validated":
        why = ("its validation failed" if cand.status == "NOT validated"
               else "it carries no validation")
        raise UserError(f"the drop-in is not validated ({why}): 'autosandbox validate {unit} "
                        "FILE' proves it; 'apply --force' installs it anyway (still "
                        "health-checked, rolled back if unhealthy)")
    if cand.status_unit != unit:
        raise UserError(f"the drop-in was validated on {cand.status_unit}, not {unit}: "
                        "validate it on this unit, or 'apply --force'")


def _watch(info: ServiceInfo, text: str, target: Path) -> Snapshot:
    settings = {k: [v] for k, v in existing_settings(info, target).items()}
    for key, value in unitfile.parse(text):
        settings.setdefault(key, []).append(value)
    return Snapshot.take(paths_to_watch(directories_of(settings)))


def _ours(changes: list[Change]) -> list[Change]:
    """Changes a drop-in can cause: a new file is the service's work, anything else is not."""
    return [c for c in changes if not (c.before.kind == "missing" and c.after.kind != "dir")]


def apply(unit: str, text: str, checks: HealthChecks, force: bool = False,
          template: bool = False) -> Applied:
    check_applicable(unit, text, force)
    # a signal rolls back to the file that was there before
    undo = _Undo()
    session = UnitSession(unit, restore=undo.run, restore_on="interrupt")
    mgr, info, target, state = _installed(unit, template)
    mgr.refuse_bus(unit)
    socket = template_socket(mgr, unit)
    if socket is not None:
        require_connections(checks, unit, socket)
    with session:
        found = found_members(mgr, unit, info.control_group)
        disk = _watch(info, text, target)
        disk.keep_for_reset(info.name)
        before = target.read_bytes() if target.exists() else None
        attrs = file_attrs(target) if before is not None else None
        first = not (state / "state.json").exists()
        created = missing_dirs(target)  # removed again with our file (revert, roll-back)
        if not first:
            created = json.loads((state / "state.json").read_text()).get("created", [])
        undo.found = found
        undo.arm(mgr, info, target, before, attrs, state if first else None, created)
        backup: Path | None = None
        if first:
            state.mkdir(parents=True, exist_ok=True)
            if before is not None:
                backup = state / "previous.conf"
                # the file we replace, byte for byte, no more readable than it was
                write_like(backup, before, attrs)
            (state / "state.json").write_text(json.dumps(
                {"unit": unit, "had_previous": before is not None, "path": str(target),
                 "created": created, "attrs": attrs}))
        elif (state / "previous.conf").exists():
            backup = state / "previous.conf"
        # --force (validation judged the others, against a whole baseline run): a denial
        # its current run does not log fails the drop-in, whatever the checks said
        # (trials.verdict; dovecot, helper: `apply --force` said healthy while every mailbox
        # open but the checked one failed with "Read-only file system").
        judged = force and socket is None
        noise = {d.key() for d in parse_denials(run_lines(mgr.invocation(unit)))} \
            if judged else set()
        cursor = journal_cursor()
        write_like(target, text.encode("utf-8"), attrs)  # as found: who may read it
        health = _restart_and_judge(mgr, unit, info.type, checks, socket)
        if judged:
            health = verdict(health, parse_denials(journal_lines(unit, cursor)), noise, [])
        changed = _ours(disk.changes(disk.again()))
        if changed:
            health = Health(False, [*health.problems,
                                    *(f"changed on disk: {c.line()}" for c in changed[:3])],
                            health.state)
        if not health.healthy:
            if before is None:
                remove_file(target, created)
            else:
                write_like(target, before, attrs)
            if first:
                for name in ("state.json", "previous.conf"):
                    with contextlib.suppress(FileNotFoundError):
                        (state / name).unlink()
            if socket is None:
                back = _restart_and_judge(mgr, unit, info.type, HealthChecks(settle=2),
                                          found=found)
            else:  # new connections get the previous drop-in; nothing else to bring back
                mgr.reload()
                back = Health(True, state="listening")
            restore(_ours(disk.changes(disk.again())))
            raise HealthError(f"{unit} was unhealthy with the drop-in ({health.summary()}); "
                              f"rolled back, the unit is {back.state or 'restored'}")
        if not info.running and socket is None:
            mgr.stop(unit)
        # The commit point: a signal whose exception never came (one that arrived in a
        # finalizer is re-sent 50 ms later: interrupts.py) rolls back here, not after we have
        # said "installed" and left the drop-in (seen: exit 0 20 ms after a SIGHUP).
        interrupts.check()
        undo.disarm()
        return Applied(target, health, backup)


class _Undo:
    """What `apply` puts back if a signal interrupts it (and, after a kill, `reset` does)."""

    def __init__(self) -> None:
        self.armed: tuple[Manager, ServiceInfo, Path, bytes | None, dict[str, int] | None,
                          Path | None] | None = None
        self.created: list[str] = []
        self.found: set[Proc] = set()  # the unit's processes before apply changed anything

    def arm(self, mgr: Manager, info: ServiceInfo, target: Path, before: bytes | None,
            attrs: dict[str, int] | None, state: Path | None, created: list[str]) -> None:
        saved = None
        scratch = runstate.scratch_dir()
        if scratch is not None and before is not None:
            saved = scratch / "apply-before.conf"
            write_like(saved, before, attrs)
        runstate.record("apply", unit=info.name, target=str(target),
                        before=str(saved) if saved else None, **(attrs or {"mode": 0o644}),
                        state=str(state) if state else None, created=created)
        self.armed = (mgr, info, target, before, attrs, state)
        self.created = created

    def disarm(self) -> None:
        """Installed and healthy: nothing to put back any more."""
        runstate.record("apply-done", target=str(self.armed[2]) if self.armed else "")
        self.armed = None

    def run(self) -> None:
        if self.armed is None:
            return
        mgr, info, target, before, attrs, state = self.armed
        if before is None:
            remove_file(target, self.created)
        else:
            write_like(target, before, attrs)
        if state is not None:  # this apply made the backup: it goes too
            for name in ("state.json", "previous.conf"):
                with contextlib.suppress(FileNotFoundError):
                    (state / name).unlink()
        mgr.reload()
        if info.name.endswith("@.service"):
            return  # a per-connection template: new connections get the file put back
        mgr.reset_failed(info.name)
        stop_ending_leftovers(mgr, info.name, self.found, info.control_group)
        if info.running:
            mgr.start(info.name)


def revert(unit: str, template: bool = False) -> list[str]:
    session = UnitSession(unit)
    mgr, info, target, state = _installed(unit, template)
    with session:
        meta_file = state / "state.json"
        if not meta_file.exists():
            raise UserError(f"nothing to revert: autosandbox has not applied a drop-in to {unit}")
        meta = json.loads(meta_file.read_text())
        previous = (state / "previous.conf").read_bytes() if meta.get("had_previous") else None
        _record_revert(info, target, state, meta, previous)
        with interrupts.shielded():  # begun, it is finished: a signal waits for the end
            done = _finish_revert(mgr, unit, info, target, state, meta, previous)
        runstate.record("revert-done", target=str(target))
        return done


def _record_revert(info: ServiceInfo, target: Path, state: Path, meta: dict[str, object],
                   previous: bytes | None) -> None:
    """On record before anything changes: after a kill, `reset` finishes the revert."""
    saved = None
    scratch = runstate.scratch_dir()
    attrs = meta.get("attrs") if isinstance(meta.get("attrs"), dict) else None
    if scratch is not None and previous is not None:
        saved = scratch / "revert-previous.conf"
        write_like(saved, previous, attrs)  # type: ignore[arg-type]
    per_connection = info.name.endswith("@.service")
    runstate.record("revert", unit=info.name, target=str(target), state=str(state),
                    had_previous=previous is not None, previous=str(saved) if saved else None,
                    attrs=attrs, created=meta.get("created", []),
                    **({} if per_connection else {"was_running": _runs_after_revert(info)}))


def _runs_after_revert(info: ServiceInfo) -> bool:
    """Running, or failed: a unit the drop-in left failed (it broke at a later start: a
    directory it grants that a boot removed) runs again once the drop-in is gone; one the
    admin stopped stays stopped."""
    return info.running or info.active_state == "failed"


def _finish_revert(mgr: Manager, unit: str, info: ServiceInfo, target: Path, state: Path,
                   meta: dict[str, object], previous: bytes | None) -> list[str]:
    done = []
    if previous is not None:
        write_like(target, previous, meta.get("attrs"))  # type: ignore[arg-type]
        done.append(f"restored the previous {target}")
    else:
        remove_file(target, meta.get("created", []))  # type: ignore[arg-type]
        done.append(f"removed {target}")
    interrupts.pause_for_tests("revert-restored")
    for name in ("state.json", "previous.conf"):
        with contextlib.suppress(FileNotFoundError):
            (state / name).unlink()
    mgr.reload()
    if info.name.endswith("@.service"):
        done.append(f"new connections to {template_socket(mgr, unit)} get {unit} as it "
                    "was; instances already serving one keep their settings until they end")
    elif info.running:
        mgr.reset_failed(unit)
        done.append(f"restarted {unit}: {mgr.restart(unit)}")
    elif _runs_after_revert(info):
        mgr.reset_failed(unit)
        done.append(f"started {unit}, which had failed with the drop-in: {mgr.start(unit)}")
    return done


def diff(unit: str, text: str, template: bool = False) -> str:
    check_name(unit)
    _, info, target, _ = _installed(unit, template)
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    out = list(difflib.unified_diff(current.splitlines(keepends=True),
                                    text.splitlines(keepends=True),
                                    str(target) if current else "/dev/null", str(target)))
    effective = existing_settings(info, target)
    changes = []
    for key, value in unitfile.parse(text):
        was = effective.get(key)
        if was != value:
            changes.append(f"  {key}: {was if was is not None else '(unset)'} -> "
                           f"{value or '(reset)'}")
    summary = [f"{unit}: {len(changes)} setting(s) would change\n"] + [c + "\n" for c in changes]
    return "".join(out) + ("\n" if out else "") + "".join(summary)


LEARNED = "learned.conf"  # the last validated learn: `apply UNIT` installs it
UNVALIDATED = "unvalidated.conf"  # the last learn that was not validated: only with --force


LEARNED_PROFILE = "learned.profile.json"  # what `validate UNIT FILE` watches on disk from


def save_learned(unit: str, text: str, validated: bool, template: bool = False,
                 profile: dict[str, object] | None = None) -> Path | None:
    """Keep a learned drop-in for `apply UNIT` and `diff UNIT` without a file, and its
    profile (JSON) for `validate UNIT FILE`."""
    try:
        d = _state_dir(template_of(unit) if template else unit)
        d.mkdir(parents=True, exist_ok=True)
        path = d / (LEARNED if validated else UNVALIDATED)
        _write_bytes(path, text.encode("utf-8"))
        if profile is not None:  # the paths it saw: readable by root alone
            write_file(d / LEARNED_PROFILE, json.dumps(profile).encode("utf-8"), 0o600)
        return path
    except OSError:
        return None


def learned_profile(unit: str) -> Path | None:
    """The profile the last learn of `unit` kept (an instance's: its own, else its
    template's), None if there is none."""
    names = [unit]
    if "@" in unit and not unit.endswith("@.service"):
        with contextlib.suppress(UserError):
            names.append(template_of(unit))
    for name in names:
        path = _state_dir(name) / LEARNED_PROFILE
        if path.is_file():
            return path
    return None


def load_learned(unit: str, unvalidated_ok: bool = False, template: bool = False) -> str:
    """The newest learned drop-in of `unit`; one that was not validated only if allowed."""
    d = _state_dir(template_of(unit) if template else unit)
    found = []
    for name in (LEARNED, UNVALIDATED):
        with contextlib.suppress(OSError):
            found.append(((d / name).stat().st_mtime_ns, name))
    if not found:
        raise UserError(f"no drop-in given and none learned for {unit} "
                        f"(looked in {d})")
    _, name = max(found)
    if name == UNVALIDATED and not unvalidated_ok:
        raise UserError(f"the last learn of {unit} was not validated ({d / name}): "
                        "'apply --force' installs it anyway, or learn again")
    try:
        return (d / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {d / name}: {exc}") from None
