"""`autosandbox reset`: undo what killed runs left, from their records (systemd/runstate.py).

Here, above the pipeline's stages, because a killed run may have been in any of them: a trace's
drop-in and FIFOs, a trial's drop-in and the disk it may have changed, an unfinished apply.
"""

from __future__ import annotations

import os
import re
import shutil

from autosandbox import procs
from autosandbox.errors import UserError
from autosandbox.linux import audit
from autosandbox.linux.tracefs import in_initial_pid_namespace, tracefs_root
from autosandbox.systemd import runstate
from autosandbox.systemd.cgroup import stop_ending_leftovers
from autosandbox.systemd.dropins import (
    TRACE_DROPIN,
    TRIAL_DROPIN,
    dropin_path,
    remove_dropin,
    state_dir_of,
)
from autosandbox.systemd.instances import is_template, prefix_of, running_instances, slice_of
from autosandbox.systemd.manager import (
    RUNNING,
    Manager,
    current_scope,
    use_scope,
    user_scope,
)
from autosandbox.systemd.session import UnitSession, check_name, require_root
from autosandbox.trace.unit import detach_strace
from autosandbox.validate.snapshot import Snapshot, restore


def reset_unit(unit: str | None) -> list[str]:
    """Undo what killed autosandbox runs left: those of `unit` (and its trace or trial drop-in,
    by name), or with None every run on record whose owner is dead. Lines say what was done."""
    require_root()
    if unit is not None:
        check_name(unit)
    uid = current_scope().uid
    runs = [r for r in runstate.runs() if r.pid != os.getpid()
            and (unit is None or (r.unit == unit and r.manager_uid == uid))]
    live = [r for r in runs if r.owner_alive()]
    if unit is not None and live:
        raise UserError(f"autosandbox (pid {live[0].pid}) is still working on {unit}: "
                        "let it finish or stop it, then reset")
    done = [f"left alone: autosandbox (pid {r.pid}) is still running" for r in live]
    dead = [r for r in runs if r not in live]
    for r in dead:
        if r.unit is None:
            done += runstate.undo(r)
    units = sorted({(r.manager_uid or -1, r.unit) for r in dead if r.unit}
                   | ({(uid or -1, unit)} if unit else set()))
    scope = current_scope()
    for owner, name in units:
        try:
            if owner != (scope.uid or -1):  # reset --all: each run in its own manager
                use_scope(user_scope(f"{owner}@"))
            done += _reset_one(name, [r for r in dead if r.unit == name
                                      and (r.manager_uid or -1) == owner])
        except UserError as exc:
            if unit is not None:
                raise
            done.append(f"{name}{' of uid ' + str(owner) if owner >= 0 else ''}: {exc}")
        finally:
            use_scope(scope)
    done += [f"removed stale audit rule: {r}" for r in audit.sweep_stale_rules()]
    root = tracefs_root()
    # tracefs names the kernel's pids: in a container (another pid namespace) a live run on
    # the host would look dead, so its instances are never swept from here
    if root is not None and in_initial_pid_namespace():
        for inst in root.glob("instances/autosandbox-*"):
            m = re.search(r"-(\d+)-[^-]+$", inst.name)
            if m is not None and not procs.alive(int(m.group(1)), None) and \
                    runstate.remove_tracefs_instance(inst):
                done.append(f"removed tracefs instance {inst}")
    return done


def _as_found(mgr: Manager, unit: str, dead: list[runstate.Run]) -> list[str]:
    """The unit running or stopped as the dead runs found it."""
    done: list[str] = []
    found = runstate.found_running(dead, unit)
    state, _, _, _ = mgr.state(unit)
    procs_found = runstate.found_processes(dead, unit)
    if found is False:
        ended: list[str] = []
        stopped = _stop(mgr, unit, procs_found, ended)
        done += [f"stopped {unit} (it was stopped before): {stopped}", *ended]
        mgr.reset_failed(unit)
    elif found or state in (*RUNNING, "failed"):
        # running when found: started again even if the kill came while we had it
        # stopped (between a trial's stop and start, or the trace's end and restore)
        mgr.reset_failed(unit)
        if procs_found is None:
            done.append(f"restarted {unit}: {mgr.restart(unit)}")
        else:
            _stop(mgr, unit, procs_found, done)
            done.append(f"restarted {unit}: {mgr.start(unit)}")
    return done


def _reset_one(unit: str, dead: list[runstate.Run]) -> list[str]:
    """Under the unit's lock: what its dead runs recorded, its trace and trial drop-ins, its
    FIFOs; then the unit is restarted (or stopped, if the run found it stopped)."""
    mgr = Manager()
    if not is_template(unit):  # a template's instances are never restarted: only files go
        mgr.info(unit)
    with UnitSession(unit):
        done: list[str] = []
        # restarted only if a run changed it (or a drop-in of ours may have been loaded)
        touched = any(e["kind"] in ("dropin", "changed", "revert")
                      for r in dead for e in r.entries)
        # an apply killed after it wrote its drop-in may have had systemd load it, before it
        # restarted anything: the file undone, systemd must read the unit again (CI: a kill
        # 1.4 s into apply left the removed drop-in loaded, DropInPaths= still naming it)
        reload = touched or any(e["kind"] == "apply" for r in dead for e in r.entries)
        # read before undo removes the run's scratch directory they are kept in
        disks = [d for r in dead for d in _disk_snapshots(r)]
        for r in dead:
            done += runstate.undo(r)
        for name in (TRACE_DROPIN, TRIAL_DROPIN):
            if remove_dropin(dropin_path(unit, name)):
                done.append(f"removed {dropin_path(unit, name)}")
                touched = True
        # the killed run's FIFOs (its strace went with it: a FIFO without reader)
        state_dir = state_dir_of(unit)
        if state_dir.is_dir():
            shutil.rmtree(state_dir, ignore_errors=True)
            done.append(f"removed {state_dir}")
        if is_template(unit):
            if reload:
                mgr.reload()
            # instances a killed run traced serve on; our strace lets go of them
            strace = shutil.which("strace")
            slice_cg = slice_of(mgr, unit)
            if strace and detach_strace(sorted(running_instances(slice_cg, prefix_of(unit))),
                                        strace):
                done.append(f"detached strace from instances of {unit} (they run on)")
        elif touched:
            mgr.reload()
            done += _as_found(mgr, unit, dead)
        elif reload:
            mgr.reload()
            done.append(f"reloaded systemd: {unit} runs as found, its drop-in gone")
        # after the unit is as found again (its own directories set up by its own start):
        # what a killed trial left changed on disk (owners, modes, ACLs) goes back
        for before in disks:
            # a file that was not there is the service's own work: left, as apply leaves it
            changes = [c for c in before.changes(before.again()) if c.before.kind != "missing"]
            failed = restore(changes)
            done += [f"put back {c.path} as found (since changed: {c.line().split(': ', 1)[1]})"
                     for c in changes
                     if not any(f.startswith(f"{c.path}: ") for f in failed)] + failed
    return done


def _stop(mgr: Manager, unit: str, found: set[tuple[int, int]] | None,
          done: list[str]) -> str:
    """Stop the unit. Where a killed trial or apply recorded the processes it found (`found`),
    also end what its restarts started and the stop leaves (cgroup.stop_ending_leftovers: a
    daemon of KillMode=process serving on in a candidate's sandbox); a trace's record has
    none: nothing of ours ran sandboxed. What was ended goes to `done`."""
    if found is None:
        return mgr.stop(unit)
    ended = stop_ending_leftovers(mgr, unit, found)
    if ended:
        done.append(f"ended {len(ended)} process(es) a trial started and its stop left "
                    f"running: {', '.join(ended[:5])}")
    return mgr.state(unit)[0]


def _disk_snapshots(run: runstate.Run) -> list[Snapshot]:
    if any(e["kind"] == "apply-done" for e in run.entries):
        return []  # installed and found healthy: what its drop-in does on disk is wanted
    out = []
    for e in run.entries:
        path = str(e.get("path", ""))
        if e["kind"] == "disk" and path.startswith(f"{run.scratch}/"):
            try:
                out.append(Snapshot.load(path))
            except FileNotFoundError:
                continue  # killed between recording it and writing it: nothing changed yet
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read what {path} recorded of the disk: {exc}") from None
    return out


