"""The trial loop: install the candidate as a runtime drop-in, restart, judge, relax, repeat;
then put the unit back as it was found. Bounded by --max-trials restarts."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autosandbox import unitfile
from autosandbox.errors import UserError
from autosandbox.synth.rules import Setting
from autosandbox.synth.synthesize import Sandbox
from autosandbox.synth.target import host_target
from autosandbox.systemd.cgroup import CgroupSampler
from autosandbox.systemd.dropins import (
    TRIAL_DROPIN,
    dropin_path,
    remove_dropin,
    unit_lock,
    write_dropin,
)
from autosandbox.systemd.manager import Manager, ServiceInfo, check_unit_name
from autosandbox.trace import audit
from autosandbox.trace.tracefs import syscall_names
from autosandbox.trace.unit import require_root, terminate_as_interrupt
from autosandbox.validate.denials import (
    Denial,
    audit_denials,
    journal_cursor,
    journal_lines,
    parse_denials,
    seccomp_denials,
)
from autosandbox.validate.health import Health, HealthChecks, judge, user_checks
from autosandbox.validate.relax import (
    Relaxation,
    relax_by_evidence,
    relax_row,
    restriction_rows,
    subset,
)


@dataclass
class Trial:
    number: int
    kind: str  # candidate | bisect | seccomp (the filter kills, so audit names the call)
    rows: list[str] | None  # restriction rows applied (None: all of the candidate)
    health: Health
    denials: list[Denial]
    relaxed: list[Relaxation] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"trial": self.number, "kind": self.kind, "rows": self.rows,
                "healthy": self.health.healthy, "problems": self.health.problems,
                "denials": [{"kind": d.kind, "path": d.path, "source": d.source,
                             "text": d.text} for d in self.denials],
                "relaxed": [r.to_json() for r in self.relaxed]}

    def line(self) -> str:
        what = {"candidate": "candidate", "seccomp": "candidate, the filter killing",
                "bisect": f"bisect with {len(self.rows or [])} rows"}[self.kind]
        out = f"trial {self.number} ({what}): {self.health.summary()}"
        for r in self.relaxed:
            out += f"\n  relaxed {r.directive}: {r.before or '-'} -> {r.after} ({r.why[:100]})"
        return out


@dataclass
class Validation:
    sandbox: Sandbox
    healthy: bool
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return len(self.trials)


def parse_candidate(text: str, unit: str) -> Sandbox:
    """A drop-in file as a candidate: each assignment with the comments above it as evidence."""
    sb = Sandbox(unit, host_target(), ["file"])
    comments: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            comments.append(line.lstrip("#; "))
            continue
        if line.startswith("["):
            section = line
            comments = []
            continue
        key, sep, value = line.partition("=")
        if not sep:
            comments = []
            continue
        if section != "[Service]":
            raise UserError(f"the candidate sets {key.strip()}= outside [Service]; "
                            "autosandbox validates [Service] drop-ins only")
        sb.settings.append(Setting(key.strip(), value.split() if value.strip() else [],
                                   " ".join(comments) or "from the candidate file"))
        comments = []
    if not sb.settings:
        raise UserError("the candidate drop-in sets nothing")
    return sb


def validate(unit: str, candidate: Sandbox, checks: HealthChecks, max_trials: int = 12,
             on_event: Callable[[str], None] | None = None) -> Validation:
    require_root()
    check_unit_name(unit)
    mgr = Manager()
    info = mgr.info(unit)
    dropin = dropin_path(unit, TRIAL_DROPIN)
    with unit_lock(unit), terminate_as_interrupt():
        if dropin.exists():
            raise UserError(f"a trial drop-in from an earlier run is still installed "
                            f"({dropin}): run 'autosandbox reset {unit}' first")
        if info.running:
            problems = user_checks(checks)
            if problems:
                raise UserError(f"{unit} fails its checks before any trial ({problems[0]}): "
                                "fix the service or the checks first")
        try:
            return _loop(mgr, info, candidate, checks, max_trials, dropin, on_event)
        finally:
            remove_dropin(dropin)
            mgr.reload()
            if info.running:
                mgr.reset_failed(unit)
                mgr.restart(unit)
            else:
                mgr.stop(unit)
                mgr.reset_failed(unit)


def _trial(mgr: Manager, info: ServiceInfo, sb: Sandbox, checks: HealthChecks, dropin: Path,
           number: int, rows: list[str] | None, kind: str) -> Trial:
    write_dropin(dropin, sb.render())
    mgr.reload()
    mgr.reset_failed(info.name)
    cursor = journal_cursor()
    since = time.time()
    with contextlib.ExitStack() as stack:
        rules = None
        if audit.unavailable_reason() is None:
            with contextlib.suppress(OSError):
                rules = stack.enter_context(
                    audit.AuditRules(f"autosandbox-trial-{os.getpid()}-{number}"))
        cgroup = info.control_group or f"/system.slice/{info.name}"
        sampler = stack.enter_context(CgroupSampler(lambda: cgroup))
        state = mgr.restart(info.name)
        health = judge(mgr, info.name, info.type, checks, state)
    denials = parse_denials(journal_lines(info.name, cursor))
    if rules is not None:
        denials = audit_denials(rules.events(), sampler.pids) + denials
        names = syscall_names()
        if names is not None:
            denials = seccomp_denials(audit.seccomp_kills(since, names), sampler.pids) + denials
    return Trial(number, kind, rows, health, denials)


def _killing(sb: Sandbox) -> Sandbox:
    """`sb` with the filter's default action, kill: the kernel audits a kill, not an EPERM."""
    probe = copy.deepcopy(sb)
    probe.settings = [s for s in probe.settings if s.directive != "SystemCallErrorNumber"]
    return probe


def _loop(mgr: Manager, info: ServiceInfo, sb: Sandbox, checks: HealthChecks, max_trials: int,
          dropin: Path, on_event: Callable[[str], None] | None) -> Validation:
    trials: list[Trial] = []
    notes: list[str] = []

    def say(text: str) -> None:
        if on_event is not None:
            on_event(text)

    def run(candidate: Sandbox, rows: list[str] | None, kind: str = "candidate") -> Trial:
        t = _trial(mgr, info, candidate, checks, dropin, len(trials) + 1, rows,
                   "bisect" if rows is not None else kind)
        trials.append(t)
        return t

    def probe_filter() -> bool:
        """Once the filter is to blame: which call did it refuse? EPERM leaves no trace, so
        one trial lets the filter kill; each killed call's smallest group is allowed."""
        if (sb.values("SystemCallFilter") is None or audit.unavailable_reason() is not None
                or syscall_names() is None or len(trials) >= max_trials):
            return False
        k = run(_killing(sb), None, "seccomp")
        k.relaxed = relax_by_evidence(sb, [d for d in k.denials if d.source == "seccomp"],
                                      k.number)
        say(k.line())
        return bool(k.relaxed)

    filter_blamed = False  # the last bisection blamed the filter: probe it again first
    try:
        while len(trials) < max_trials:
            t = run(sb, None)
            if t.health.healthy:
                say(t.line())
                return Validation(sb, True, trials, notes)
            t.relaxed = relax_by_evidence(sb, t.denials, t.number)
            say(t.line())
            if t.relaxed:
                continue
            if filter_blamed:
                if probe_filter():
                    continue
                filter_blamed = False
            rows = restriction_rows(sb)
            if not rows:
                notes.append("the service fails even with no restriction left: it is not the "
                             "sandbox that breaks it")
                break
            # Smallest prefix of rows that breaks the service; its last row is the culprit.
            lo, hi = 0, len(rows)
            while hi - lo > 1 and len(trials) < max_trials:
                mid = (lo + hi) // 2
                b = run(subset(sb, set(rows[:mid])), rows[:mid])
                say(b.line())
                if b.health.healthy:
                    lo = mid
                else:
                    hi = mid
            if hi - lo > 1:
                break
            if rows[hi - 1] == "SystemCallFilter":
                filter_blamed = True
                if probe_filter():
                    continue
                filter_blamed = False
            r = relax_row(sb, rows[hi - 1], len(trials), "bisection: the service breaks with "
                          "it and works without it")
            if r is not None:
                trials[-1].relaxed.append(r)
                say(f"  relaxed {r.directive}: {r.before} -> {r.after} (bisection)")
    except KeyboardInterrupt:
        notes.append("interrupted: the unit was restored; the candidate is not validated")
    if len(trials) >= max_trials:
        notes.append(f"no healthy candidate within {max_trials} restarts (--max-trials)")
    return Validation(sb, False, trials, notes)


def render_validated(v: Validation) -> str:
    text = v.sandbox.render()
    status = (f"validated in {v.restarts} restart(s)" if v.healthy
              else f"NOT validated after {v.restarts} restart(s)")
    return unitfile.join_lines([*unitfile.comment(f"autosandbox: {status}."), text.rstrip("\n")])
