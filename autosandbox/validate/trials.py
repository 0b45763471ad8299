"""The trial loop: first the unit as found (the baseline), then the candidate installed as a
runtime drop-in; each trial runs the unit's whole life cycle (start, workload, reload, stop,
start again) and is judged by health, denials from any source and changes on disk; a failed
candidate is relaxed (evidence first, else bisection) and tried again. Then the unit is put
back as it was found. Bounded by --max-trials restarts, the baseline included."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autosandbox import commands, interrupts, procs, unitfile
from autosandbox.errors import UserError
from autosandbox.linux import audit
from autosandbox.linux.logrotate import rotated_files
from autosandbox.linux.syscalls import syscall_names
from autosandbox.report import QUIET, Reporter
from autosandbox.synth.grants import Evidence, Relaxation
from autosandbox.synth.model import Denial, Sandbox
from autosandbox.systemd.cgroup import (
    CgroupSampler,
    Proc,
    end_leftovers,
    found_members,
    leftovers,
    note_found,
    stop_ending_leftovers,
)
from autosandbox.systemd.dropins import (
    TRIAL_DROPIN,
    dropin_path,
    remove_dropin,
    write_dropin,
)
from autosandbox.systemd.instances import (
    accepted,
    prefix_of,
    slice_of,
    template_info,
    template_socket,
)
from autosandbox.systemd.journal import journal_cursor, journal_lines
from autosandbox.systemd.manager import Manager, ServiceInfo, current_scope
from autosandbox.systemd.session import UnitSession, existing_settings
from autosandbox.unitfile import clip
from autosandbox.validate.candidate import parse_candidate
from autosandbox.validate.denials import (
    audit_denials,
    parse_denials,
    seccomp_denials,
)
from autosandbox.validate.health import Health, HealthChecks, judge, user_checks
from autosandbox.validate.perconn import connection_trial, require_connections
from autosandbox.validate.relax import (
    LOOKUPS,
    relax_by_evidence,
    relax_disk,
    relax_row,
    restriction_rows,
    subset,
)
from autosandbox.validate.service_logs import LogWatch
from autosandbox.validate.snapshot import (
    Change,
    Entry,
    Snapshot,
    directories_of,
    paths_to_watch,
    restore,
)

DenialKey = tuple[str, str, str | None, str | None]
__all__ = ["Trial", "Validation", "parse_candidate", "render_validated", "validate",
           "verdict"]


@dataclass
class Trial:
    number: int
    kind: str  # baseline | candidate | bisect | seccomp (the filter kills, so audit names it)
    rows: list[str] | None  # restriction rows applied (None: all of the candidate)
    health: Health
    denials: list[Denial]
    relaxed: list[Relaxation] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what the trial changed on disk
    log: list[str] = field(default_factory=list)  # what relaxation refused, and why
    stop_s: float | None = None
    disk: list[Change] = field(default_factory=list)
    instances: int | None = None  # per connection: instances the trial started

    def to_json(self) -> dict[str, object]:
        return {"trial": self.number, "kind": self.kind, "rows": self.rows,
                "healthy": self.health.healthy, "problems": self.health.problems,
                "denials": [{"kind": d.kind, "path": d.path, "source": d.source,
                             "text": d.text} for d in self.denials],
                "changes": self.changes, "log": self.log,
                "stop_s": None if self.stop_s is None else round(self.stop_s, 2),
                "instances": self.instances,
                "relaxed": [r.to_json() for r in self.relaxed]}

    def line(self) -> str:
        what = {"candidate": "candidate", "seccomp": "candidate, the filter killing",
                "baseline": "the unit as found, no sandbox",
                "bisect": f"bisect with {len(self.rows or [])} rows"
                if self.rows else "bisect with the grants alone"}[self.kind]
        out = f"trial {self.number} ({what}): {self.health.summary()}"
        if self.instances is not None:
            out += f" ({self.instances} instance(s) started)"
        for r in self.relaxed:
            out += f"\n  relaxed {r.directive}: {r.before or '-'} -> {r.after} ({clip(r.why, 100)})"
        for line in self.log:
            out += f"\n  {line[:160]}"
        return out


@dataclass
class Validation:
    sandbox: Sandbox
    healthy: bool
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)
    unit: str = ""
    per_connection: str | None = None  # the Accept=yes socket of a template
    @property
    def restarts(self) -> int:
        """Trials run, the baseline included (each one a full life cycle of the unit)."""
        return len(self.trials)


def verdict(health: Health, denials: list[Denial], noise: set[DenialKey],
            changes: list[str]) -> Health:
    """A trial's health: any denial the unit as found did not have, and any change on disk,
    is a failure whatever the checks said (a refused lookup is not: see relax.LOOKUPS)."""
    fresh = [d for d in denials if d.key() not in noise and d.syscall not in LOOKUPS]
    problems = [f"denied: {clip(d.text, 120)}" for d in fresh[:3]]
    if len(fresh) > 3:
        problems.append(f"{len(fresh) - 3} more denials")
    problems += [f"changed on disk: {line}" for line in changes[:3]]
    if len(changes) > 3:
        problems.append(f"{len(changes) - 3} more changes on disk")
    if not problems:
        return health
    return Health(False, [*health.problems, *problems], health.state, health.ready_s)


def _unit_settings(info: ServiceInfo, dropin: Path) -> dict[str, list[str]]:
    return {k: [v] for k, v in existing_settings(info, dropin).items()}


def _sandbox_settings(sb: Sandbox) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sb.settings:
        out.setdefault(s.directive, []).extend(s.values)
    return out


def validate(unit: str, candidate: Sandbox, checks: HealthChecks, max_trials: int = 12,
             reporter: Reporter = QUIET, written: Sequence[str] = (),
             allow_write: Sequence[str] = (), per_connection: str | None = None) -> Validation:
    """`written`: paths the profile saw written (watched on disk with the unit's directories);
    `allow_write`: the user's --allow-write paths (relaxation never grants others that
    synth/sensitive.py withholds). `per_connection`: `unit` is a template started by this
    Accept=yes socket: the candidate goes to the template's drop-in, nothing is restarted,
    each trial's checks drive connections through the socket (perconn.py)."""
    dropin = dropin_path(unit, TRIAL_DROPIN)
    session = UnitSession(unit, own_dropin=dropin)
    mgr = Manager()
    per_connection = per_connection or template_socket(mgr, unit)
    if per_connection:
        require_connections(checks, unit, per_connection)
        info = template_info(mgr, unit)
    else:
        info = mgr.info(unit)
        mgr.refuse_bus(unit)
    left: list[str] = []
    with session:
        dirs = directories_of({**_sandbox_settings(candidate), **_unit_settings(info, dropin)})
        run = _Run(mgr, info, checks, dropin, Snapshot.take(paths_to_watch(dirs, written)),
                   [*allow_write, *candidate.allow_write], reporter, LogWatch(written))
        run.per_connection = per_connection
        session.restore = lambda: left.extend(run.restore_unit())
        run.keep_for_reset()
        validation = run.loop(candidate, max_trials)
    if left:
        validation.notes += [f"on disk after validation: {x}" for x in left]
    if run.ended:
        validation.notes.append(f"left running by a trial's stop, ended at the restore: "
                                f"{', '.join(run.ended[:5])}")
    if per_connection:
        validation.per_connection = per_connection
        counts = [t.instances or 0 for t in validation.trials]
        validation.notes.append(
            f"{sum(counts)} instance(s) of {unit} started through {per_connection} in "
            f"{len(counts)} trial(s) ({', '.join(map(str, counts))}); the socket and "
            "instances already running were left alone")
    return validation


class _Run:
    def __init__(self, mgr: Manager, info: ServiceInfo, checks: HealthChecks, dropin: Path,
                 before: Snapshot, allow_write: Sequence[str],
                 reporter: Reporter, logs: LogWatch | None = None) -> None:
        self.mgr, self.info, self.checks, self.dropin = mgr, info, checks, dropin
        self.logs = logs if logs is not None else LogWatch(())
        self.before = before
        self.allow_write = allow_write
        self.reporter = reporter
        self.trials: list[Trial] = []
        self.noise_paths: frozenset[str] = frozenset()  # changed by the unit as found
        # ...and how each looked after the baseline: only that outcome is the unit's own (a
        # pid file the stock unit recreates is not a licence for a candidate's UMask= on it)
        self.noise_after: dict[str, Entry] = {}
        self.noise_denials: set[DenialKey] = set()
        self.stock_stop: float | None = None
        # every stop Result the unit as found ended with (a unit may end its stops one way
        # after a reload and another after a plain start: varnish)
        self.stock_results: set[str] = set()
        self.reloads = any(e.kind == "ExecReload" for e in info.exec_lines)
        user = info.user.strip()
        self.may_be_root = not info.dynamic_user and user in ("", "root", "0")
        self.per_connection: str | None = None
        # The unit's processes as found: any other one a stop leaves is our restarts' doing
        self.found: set[Proc] = found_members(mgr, info.name, info.control_group)
        self.stock_leaves = False  # the unit as found leaves processes at its stop
        self.ended: list[str] = []  # left by a trial's stop, ended by the restore
        self.rotated = rotated_files()  # a denied log logrotate renames: not granted alone

    def _cgroup(self) -> str:
        return self.mgr.control_group(self.info.name, self.info.control_group)

    def say(self, text: str) -> None:
        """Everything validate reports goes through here."""
        self.reporter.event(text)

    # -- one trial: the whole life cycle -------------------------------------------------
    def _cycle(self, checks: HealthChecks) -> tuple[Health, float | None]:
        mgr, unit = self.mgr, self.info.name
        first = judge(mgr, unit, self.info.type, checks, mgr.restart(unit))
        if self.info.type == "oneshot":
            return first, None
        if not first.healthy:
            self._stop()  # its shutdown belongs to this trial, not the next
            return first, None
        problems: list[str] = []
        if self.reloads:
            try:
                cp = commands.run([*current_scope().systemctl(), "reload", unit], check=False,
                                  timeout=max(checks.ready, 30))
                failed = cp.returncode != 0
                why = (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]
            except commands.ToolTimeout:
                failed, why = True, "timed out"
            mgr.wait(unit, 30)
            if failed:
                problems.append(f"reload failed: {why[:120]}")
            else:
                problems += [f"after reload: {p}" for p in
                             user_checks(checks, retry_for=checks.ready)]
        took, stopped = self._stop()
        problems += stopped
        mgr.reset_failed(unit)
        again = judge(mgr, unit, self.info.type, checks, mgr.start(unit), hold=False)
        problems += [f"after a stop and start: {p}" for p in again.problems]
        # Stopped again, so this sandbox's shutdown is judged here, not in the next trial
        # (whose restart would stop a process still set up by this one).
        problems += [f"second {p}" for p in self._stop()[1]]
        health = Health(not problems, problems, again.state, first.ready_s)
        return health, took

    def _stop(self) -> tuple[float, list[str]]:
        """Stop within the time the unit as found needed (twice, + 5 s) and with its result;
        a stop that hangs is killed rather than waited out (haproxy: 90 s to SIGKILL)."""
        mgr, unit = self.mgr, self.info.name
        problems: list[str] = []
        limit = 300.0 if self.stock_stop is None else 2 * self.stock_stop + 5
        began = time.monotonic()
        began_ticks = procs.now_ticks()
        run = mgr.invocation(unit)
        state = mgr.stop(unit, timeout=limit)
        took = time.monotonic() - began
        if state not in ("inactive", "failed") and mgr.invocation(unit) != run:
            # stopped, then started again by its trigger (rsyslog: journald's messages on
            # syslog.socket); the Result is the new run's by now
            return took, problems
        if state not in ("inactive", "failed"):
            stock = f"{self.stock_stop:.1f}s" if self.stock_stop is not None else "-"
            problems.append(f"stop took over {limit:.0f}s (as found: {stock}); killed"
                            if took >= limit else f"still {state} after its stop job; killed")
            commands.run([*current_scope().systemctl(), "kill", "--signal=SIGKILL", unit],
                         check=False)
            mgr.wait(unit, 60)
        result = str(mgr.unit(unit).Result)
        if not self.trials:  # the baseline: the unit as found; what its stop leaves is its own
            left = leftovers(self._cgroup(), self.found, began_ticks)
            self.stock_leaves |= bool(left)
            self.found |= left
            note_found(self.info.name, left)
            self.stock_results.add(result)
            return took, problems
        interrupts.pause_for_tests("candidate-stopped")
        # a candidate's processes must not outlive its trial: with its sandbox they would serve
        # on, and the next start tests them, not itself
        ended = end_leftovers(self._cgroup(), self.found, began_ticks)
        if ended and not self.stock_leaves:
            problems.append(f"its stop left {len(ended)} process(es) running "
                            f"({', '.join(ended[:3])}); ended")
        if self.stock_results and result not in self.stock_results:  # none: all re-started
            problems.append(f"stop ended with result {result} (as found: "
                            f"{', '.join(sorted(self.stock_results))})")
        return took, problems

    def trial(self, sb: Sandbox | None, rows: list[str] | None, kind: str) -> Trial:
        interrupts.check()  # a signal something caught on its way: no trial begins after it
        mgr, info = self.mgr, self.info
        if sb is None:
            remove_dropin(self.dropin)
        else:
            write_dropin(self.dropin, sb.render())
        mgr.reload()
        if not self.per_connection:
            mgr.reset_failed(info.name)
        cursor = journal_cursor()
        since = time.time()
        checks = self.checks
        baseline = self.trials[0] if self.trials else None
        if baseline is not None and baseline.health.ready_s is not None:
            # as long as the unit as found needed, with room for a busy machine
            checks = dataclasses.replace(
                checks, ready=min(checks.ready, max(10.0, 3 * baseline.health.ready_s + 5)))
        with contextlib.ExitStack() as stack:
            rules = None
            if audit.unavailable_reason() is None:
                with contextlib.suppress(OSError):
                    rules = stack.enter_context(audit.AuditRules(
                        f"autosandbox-trial-{os.getpid()}-{len(self.trials) + 1}"))
            cgroup = info.control_group or f"/system.slice/{info.name}"
            instances = None
            if self.per_connection:
                cgroup = slice_of(mgr, info.name)  # its instances' slice
            sampler = stack.enter_context(CgroupSampler(lambda: cgroup))
            marks = self.logs.mark()
            sock = self.per_connection
            if sock:
                health, out = connection_trial(checks, info.name, sock, cursor,
                                               lambda: accepted(mgr, sock))
                stop_s, instances = None, len(out.started)
                for unit in out.started:  # a failed instance is no lasting state of ours
                    if out.ended.get(unit, "success") != "success":
                        mgr.reset_failed(unit)
            else:
                health, stop_s = self._cycle(checks)
        journal_unit = f"{prefix_of(info.name)}@*.service" if self.per_connection else info.name
        denials = parse_denials(journal_lines(journal_unit, cursor))
        for path, lines in self.logs.appended(marks).items():
            denials += [dataclasses.replace(d, text=f"{path}: {d.text}")
                        for d in parse_denials(lines, "log")]
        if rules is not None:
            denials = audit_denials(rules.events(), sampler.pids) + denials
            names = syscall_names()
            if names is not None:
                denials = seccomp_denials(audit.seccomp_kills(since, names),
                                          sampler.pids) + denials
        t = Trial(len(self.trials) + 1, kind, rows, health, denials, stop_s=stop_s,
                  instances=instances)
        after = self.before.again()
        if kind == "baseline":
            self.noise_after = {c.path: c.after for c in self.before.changes(after)}
            self.noise_paths = frozenset(self.noise_after)
            if self.noise_paths:
                self.keep_for_reset()
            self.noise_denials = {d.key() for d in denials}
            self.stock_stop = stop_s
            self.trials.append(t)
            return t
        changes = self.before.changes_beyond(after, self.noise_after)
        t.disk = changes
        t.changes = [c.line() for c in changes]
        t.log += restore(changes)
        t.health = verdict(t.health, denials, self.noise_denials, t.changes)
        self.trials.append(t)
        return t

    def keep_for_reset(self) -> None:
        """The disk as found, in the run's record: a kill between a trial's change and its
        restore is put back by `reset` (less what the unit as found changes itself)."""
        self.before.keep_for_reset(self.info.name, self.noise_paths)

    def restore_unit(self) -> list[str]:
        """The unit as it was found, then the disk (put_back's lines): the validation's
        restore, run by its UnitSession however the validation ends."""
        mgr, unit = self.mgr, self.info.name
        loaded = remove_dropin(self.dropin)  # written: systemd may have loaded it
        if loaded:
            mgr.reload()
        if self.per_connection:
            pass  # its instances end with their connections; the socket listens on
        elif not loaded and unit not in mgr.changed:
            pass  # interrupted before the first trial: the unit runs as it was found
        elif self.info.running:
            mgr.reset_failed(unit)
            self.ended += stop_ending_leftovers(mgr, unit, self.found, self.info.control_group)
            mgr.start(unit)
        else:
            self.ended += stop_ending_leftovers(mgr, unit, self.found, self.info.control_group)
            mgr.reset_failed(unit)
        return self.put_back()

    def put_back(self) -> list[str]:
        """After the unit is restored: what differs from the snapshot, put back where we can."""
        changes: list[Change] = self.before.changes(self.before.again(), self.noise_paths)
        return [c.line() for c in changes] + restore(changes)

    # -- the loop ------------------------------------------------------------------------
    def loop(self, sb: Sandbox, max_trials: int) -> Validation:
        unit = self.info.name
        base = self.trial(None, None, "baseline")
        self.say(base.line())
        if not base.health.healthy:
            raise UserError(f"{unit} is not healthy without any sandbox "
                            f"({base.health.problems[0]}): fix the service or the checks "
                            "first")
        v = _loop(self, sb, max_trials)
        v.unit = unit
        return v


def _killing(sb: Sandbox) -> Sandbox:
    """`sb` with the filter's default action, kill: the kernel audits a kill, not an EPERM."""
    return sb.with_settings(s for s in sb.settings if s.directive != "SystemCallErrorNumber")


def _try(r: _Run, candidate: Sandbox, rows: list[str] | None,
         kind: str = "candidate") -> Trial:
    return r.trial(candidate, rows, "bisect" if rows is not None else kind)


def _probe_filter(r: _Run, sb: Sandbox, max_trials: int) -> Sandbox | None:
    """Once the filter is to blame: which call did it refuse? EPERM leaves no trace, so
    one trial lets the filter kill; each killed call's smallest group is allowed. The
    candidate so relaxed, None when nothing was."""
    if (sb.values("SystemCallFilter") is None or audit.unavailable_reason() is not None
            or syscall_names() is None or len(r.trials) >= max_trials):
        return None
    k = _try(r, _killing(sb), None, "seccomp")
    ev = Evidence(r.may_be_root, r.allow_write, home=_own_home(), rotated=r.rotated)
    sb, k.relaxed = relax_by_evidence(sb, [d for d in k.denials if d.source == "seccomp"],
                                      k.number, ev)
    k.log += ev.log
    r.say(k.line())
    return sb if k.relaxed else None


def _relax_failed(r: _Run, sb: Sandbox, t: Trial) -> Sandbox:
    """Relax a failed candidate with the evidence of its trial: disk changes, denials."""
    ev = Evidence(r.may_be_root, r.allow_write, frozenset(c.path for c in t.disk),
                  home=_own_home(), rotated=r.rotated)
    sb, t.relaxed = relax_disk(sb, t.disk, t.number, ev)
    sb, by_denials = relax_by_evidence(sb, [d for d in t.denials
                                            if d.key() not in r.noise_denials],
                                       t.number, ev)
    t.relaxed += by_denials
    t.log += ev.log
    r.say(t.line())
    return sb


# _bisect's verdict when the grants alone break the service: no restriction row is to blame.
GRANTS = "the grants"


def _bisect(r: _Run, sb: Sandbox, rows: list[str], max_trials: int) -> str | None:
    """The row to blame: the last of the smallest prefix of rows that breaks the service
    (the baseline was healthy, so a failure here is the candidate's doing); None when the
    trials ran out first. Every subset keeps the grants, so the empty prefix is not the
    baseline: before the first row is blamed, the grants alone are tried (postfix: two
    ReadWritePaths= entries, two mounts, a rename between them fails with EXDEV; bisection
    blamed ProtectHome= twice, then PrivateTmp=)."""
    lo, hi = 0, len(rows)
    while hi - lo > 1 and len(r.trials) < max_trials:
        mid = (lo + hi) // 2
        b = _try(r, subset(sb, set(rows[:mid])), rows[:mid])
        r.say(b.line())
        if b.health.healthy:
            lo = mid
        else:
            hi = mid
    if hi - lo > 1:
        return None
    grants = subset(sb, set())
    if hi == 1 and grants.settings and len(r.trials) < max_trials:
        b = _try(r, grants, [])
        r.say(b.line())
        if not b.health.healthy:
            return GRANTS
    return rows[hi - 1]


def _loop(r: _Run, sb: Sandbox, max_trials: int) -> Validation:
    trials = r.trials
    notes: list[str] = []
    filter_blamed = False  # the last bisection blamed the filter: probe it again first
    while len(trials) < max_trials:
        t = _try(r, sb, None)
        if t.health.healthy:
            r.say(t.line())
            return Validation(sb, True, trials, notes)
        sb = _relax_failed(r, sb, t)
        if t.relaxed:
            continue
        if filter_blamed:
            probed = _probe_filter(r, sb, max_trials)
            if probed is not None:
                sb = probed
                continue
            filter_blamed = False
        rows = restriction_rows(sb)
        if not rows:
            notes.append("the service fails even with no restriction left: it is not the "
                         "sandbox's restrictions that break it")
            break
        row = _bisect(r, sb, rows, max_trials)
        if row is None:
            break
        if row == GRANTS:
            notes.append("the service breaks with the grants alone, no restriction set "
                         "(ReadWritePaths= and *Directory= lines; each entry is a mount of "
                         "its own, and a rename between two fails with EXDEV): no row to "
                         "relax; see the last trial's problems")
            break
        if row == "SystemCallFilter":
            filter_blamed = True
            probed = _probe_filter(r, sb, max_trials)
            if probed is not None:
                sb = probed
                continue
            filter_blamed = False
        sb, rel = relax_row(sb, row, len(trials), "bisection: the service breaks "
                            "with it and works without it (healthy without any sandbox)")
        if rel is not None:
            trials[-1].relaxed.append(rel)
            r.say(f"  relaxed {rel.directive}: {rel.before} -> {rel.after} (bisection)")
    # An interruption is not a verdict: it unwinds through validate(), which restores the
    # unit, and ends the command with exit 130 (interrupts.py).
    if len(trials) >= max_trials:
        notes.append(f"no healthy candidate within {max_trials} restarts (--max-trials, "
                     "the baseline included)")
    return Validation(sb, False, trials, notes)


def render_validated(v: Validation) -> str:
    text = v.sandbox.render()
    unit = v.unit or v.sandbox.subject
    status = (f"validated on {unit} in {v.restarts} restart(s), the baseline included"
              if v.healthy else f"NOT validated on {unit} after {v.restarts} restart(s)")
    if v.per_connection:
        started = sum(t.instances or 0 for t in v.trials)
        status = (f"validated on {unit} in {v.restarts} trial(s) through {v.per_connection} "
                  f"({started} instances), the baseline included" if v.healthy else
                  f"NOT validated on {unit} after {v.restarts} trial(s) through "
                  f"{v.per_connection}")
    return unitfile.join_lines([*unitfile.comment(f"autosandbox: {status}."), text.rstrip("\n")])


def _own_home() -> str | None:
    """A user's manager: its user's home is the service's own place (sensitive.withheld)."""
    scope = current_scope()
    return scope.home if scope.is_user else None
