"""Everything a run starts or creates, recorded as it is created, so `reset` removes exactly it.

One record per run: /run/autosandbox/runs/PID-START.jsonl (root-only directory, 0700), one JSON
object a line, appended *before* the thing it names is created (after, for a process: its pid
is known only then). The first line names the owner (pid and start time) and the unit. A run
that ends removes its record; a record whose owner is dead is what `reset` undoes. Undoing is
idempotent: a resource that is already gone is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autosandbox import procs
from autosandbox.commands import ToolError
from autosandbox.errors import UserError
from autosandbox.systemd.dropins import STATE_DIR, remove_dropin, remove_file, write_like
from autosandbox.systemd.manager import current_scope

RUNS_DIR = STATE_DIR / "runs"
_TRACEFS_PREFIXES = ("/sys/kernel/tracing/instances/autosandbox-",
                     "/sys/kernel/debug/tracing/instances/autosandbox-")


def _secure_dir(path: Path, mode: int) -> None:
    """Create `path` under /run/autosandbox, or accept it only if it is root's own real
    directory (mkdir is atomic, lstat follows no symlink); then force `mode`."""
    for d, m in ((STATE_DIR, 0o711), (RUNS_DIR, 0o700), (path, mode)):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise UserError(f"{d} is not root's own directory: refusing to use it")
        if stat.S_IMODE(st.st_mode) != m:
            os.chmod(d, m)


@dataclass
class Run:
    path: Path
    pid: int
    start: int | None
    unit: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    manager_uid: int | None = None  # the unit's manager: the system's, or this user's

    @property
    def scratch(self) -> Path:
        """A root-only directory of the run's own (FIFOs of a command, apply's backup)."""
        return self.path.with_suffix(".d")

    def owner_alive(self) -> bool:
        return procs.alive(self.pid, self.start)

    def record(self, kind: str, **data: Any) -> None:
        line = json.dumps({"kind": kind, **data}) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise UserError(f"cannot record our state in {self.path}: {exc.strerror}") from None
        self.entries.append({"kind": kind, **data})


_current: list[Run] = []


def current() -> Run | None:
    return _current[-1] if _current else None


def record(kind: str, **data: Any) -> None:
    """Note a resource of the current run (none outside a run, e.g. without root)."""
    run = current()
    if run is not None:
        run.record(kind, **data)


def record_process(pid: int) -> None:
    record("process", pid=pid, start=procs.start_time(pid))


def scratch_dir() -> Path | None:
    run = current()
    if run is None:
        return None
    _secure_dir(run.scratch, 0o700)
    return run.scratch


@contextlib.contextmanager
def session(unit: str | None, argv: list[str]) -> Iterator[Run | None]:
    """The record of this run while it lasts (root only; others create nothing of ours)."""
    if os.geteuid() != 0 or current() is not None:
        yield current()
        return
    try:
        _secure_dir(RUNS_DIR, 0o700)
        start = procs.start_time(os.getpid())
        path = RUNS_DIR / f"{os.getpid()}-{start}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot create our state under {RUNS_DIR}: {exc.strerror}") from None
    run = Run(path, os.getpid(), start, unit)
    _current.append(run)
    try:
        run.manager_uid = current_scope().uid
        run.record("run", pid=run.pid, start=start, unit=unit, argv=argv[:20],
                   manager_uid=run.manager_uid)
        watchdog = procs.ensure_watchdog()
        if watchdog is not None:
            record_process(watchdog)
        yield run
    finally:
        _current.remove(run)
        shutil.rmtree(run.scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.unlink()


def runs() -> list[Run]:
    """Every run on record (live or not)."""
    out: list[Run] = []
    if not RUNS_DIR.is_dir():
        return out
    for path in sorted(RUNS_DIR.glob("*.jsonl")):
        entries = []
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        head = entries[0] if entries and entries[0].get("kind") == "run" else None
        if head is None:  # killed between creating the file and its first line
            pid_text = path.stem.split("-")[0]
            head = {"pid": int(pid_text) if pid_text.isdigit() else 0, "start": -1,
                    "unit": None}
        uid = head.get("manager_uid")
        out.append(Run(path, int(head["pid"]), head.get("start"), head.get("unit"), entries,
                       int(uid) if isinstance(uid, int) else None))
    return out


def found_processes(runs: list[Run], unit: str) -> set[tuple[int, int]] | None:
    """The unit's processes as these runs found them (pid, start; the union: a process any run
    found is never taken for a trial's leftover), or None if no run recorded them."""
    found: set[tuple[int, int]] | None = None
    for run in runs:
        for e in run.entries:
            if e["kind"] == "found" and e.get("unit") == unit:
                found = (found or set()) | {(int(p), int(s)) for p, s in e.get("procs", [])}
    return found


def found_running(runs: list[Run], unit: str) -> bool | None:
    """Whether `unit` was running when the earliest of these runs first changed it (None: no
    run recorded it), which is the state `reset` brings it back to."""
    for run in sorted(runs, key=lambda r: r.start if r.start is not None else -1):
        for e in run.entries:
            if "was_running" in e and unit in (e.get("unit"), e.get("name")):
                return bool(e["was_running"])
    return None


def undo(run: Run) -> list[str]:
    """Remove what a dead run left (the caller restarts its unit). Lines say what was done."""
    done: list[str] = []
    # processes first: a live bpftrace or strace would keep FIFOs and instances busy
    for e in run.entries:
        if e["kind"] == "process" and procs.kill_tree(int(e["pid"]), e.get("start")):
            done.append(f"killed process {e['pid']} left running (and its session)")
    for e in reversed(run.entries):
        kind, path = e["kind"], str(e.get("path", ""))
        if kind == "tracefs" and path.startswith(_TRACEFS_PREFIXES) and os.path.isdir(path):
            if remove_tracefs_instance(Path(path)):
                done.append(f"removed tracefs instance {path}")
            else:
                done.append(f"could not remove tracefs instance {path} (still in use?)")
        elif kind == "dir" and path.startswith(f"{STATE_DIR}/") and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path}")
        elif kind == "dropin" and path.startswith(str(current_scope().runtime_dir) + "/") \
                and remove_dropin(Path(path), e.get("created", [])):
            done.append(f"removed {path}")
        elif kind == "audit":
            done += _remove_audit_rules(e)
        elif kind == "apply" and not any(x["kind"] == "apply-done" for x in run.entries):
            done += _undo_apply(e)
        elif kind == "revert" and not any(x["kind"] == "revert-done" for x in run.entries):
            done += _finish_revert(e)
    shutil.rmtree(run.scratch, ignore_errors=True)
    with contextlib.suppress(OSError):
        run.path.unlink()
    return done


def _remove_audit_rules(e: dict[str, Any]) -> list[str]:
    # here, not at the top: linux.audit records its rules through this module
    from autosandbox.linux.audit import delete_rule
    done = []
    for spec in e.get("specs", []):
        try:
            if delete_rule(["always,exit", *spec, "-k", e["key"]]):
                done.append(f"removed audit rule {' '.join(spec)} -k {e['key']}")
        except ToolError as exc:
            done.append(f"could not remove an audit rule: {exc}")
    return done


def _undo_apply(e: dict[str, Any]) -> list[str]:
    """An apply killed before it finished: put the file that was there back (and forget the
    backup it made, when it was the first apply)."""
    state = e.get("state")
    if state and str(state).startswith("/var/lib/autosandbox/"):
        for name in ("state.json", "previous.conf"):
            with contextlib.suppress(OSError):
                (Path(state) / name).unlink()
    target = Path(e["target"])
    if e.get("before") is None:
        if remove_file(target, e.get("created", [])):
            return [f"removed {target} (apply did not finish)"]
        return []
    saved = Path(e["before"])
    if saved.exists():
        write_like(target, saved.read_bytes(),
                   {k: e[k] for k in ("mode", "uid", "gid") if k in e})
        return [f"restored {target} as it was before the unfinished apply"]
    return []


def _finish_revert(e: dict[str, Any]) -> list[str]:
    """A revert killed before it finished: finish it (the file it replaced back, our backup
    forgotten); `reset` then reloads and restarts the unit as the revert found it."""
    target = Path(e["target"])
    attrs = e.get("attrs") if isinstance(e.get("attrs"), dict) else None
    state = str(e.get("state", ""))
    ours = state.startswith("/var/lib/autosandbox/")
    done = []
    if e.get("had_previous"):
        saved = [Path(p) for p in (e.get("previous"), ours and f"{state}/previous.conf") if p]
        found = next((p for p in saved if p.is_file()), None)
        if found is None:
            return [f"could not finish the revert of {target}: its backup is gone"]
        write_like(target, found.read_bytes(), attrs)
        done.append(f"restored the previous {target} (revert did not finish)")
    elif remove_file(target, e.get("created", [])):
        done.append(f"removed {target} (revert did not finish)")
    if ours:
        for name in ("state.json", "previous.conf"):
            with contextlib.suppress(OSError):
                (Path(state) / name).unlink()
    return done


def remove_tracefs_instance(inst: Path) -> bool:
    """Disable an instance's events and remove it; True if this call removed it (its owner
    may remove it at the same moment: nothing here fails for that)."""
    with contextlib.suppress(OSError):
        for ev in list(inst.glob("events/*/*/enable")):
            with contextlib.suppress(OSError):
                ev.write_text("0\n")
    try:
        inst.rmdir()
    except OSError:
        return False
    return True
