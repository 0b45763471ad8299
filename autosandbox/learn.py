"""The learn pipeline: trace -> profile -> synthesize -> check. One function per subject."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from autosandbox import interrupts
from autosandbox.errors import UserError
from autosandbox.report import ProgressLine
from autosandbox.results import Result, result_for_profile, with_validation
from autosandbox.systemd.dropins import TRACE_DROPIN, dropin_path
from autosandbox.trace.command import trace_command
from autosandbox.trace.unit import existing_settings, trace_unit, unit_text
from autosandbox.validate.health import HealthChecks
from autosandbox.validate.trials import validate


@dataclass
class LearnOptions:
    duration: float | None = None
    progress: bool = True
    systemd_version: int | None = None
    bpf: bool | None = None
    exercise: str | None = None
    validate: bool = True
    checks: HealthChecks | None = None
    max_trials: int = 12
    fast: bool | None = None
    keep_partial: bool = False  # a signal cuts the trace: keep its profile (marked partial)
    allow_write: tuple[str, ...] = ()  # sensitive places the user lets it write (--allow-write)
    ip_allow: tuple[str, ...] = ()  # peers the user pins (--ip-allow)


def learn_command(argv: list[str], opts: LearnOptions) -> Result:
    progress = ProgressLine(enabled=opts.progress)
    try:
        traced = trace_command(argv, opts.duration, on_progress=progress, fast=opts.fast,
                               keep_partial=opts.keep_partial)
    finally:
        progress.done()
    result = result_for_profile(traced.profile, opts.systemd_version, opts.bpf,
                                opts.allow_write, opts.ip_allow)
    if traced.partial:
        result.notes.append("partial: the trace was interrupted (--keep-partial)")
    elif traced.interrupted:
        result.notes.append("the command was stopped before it ended; code paths it did not "
                            "reach are not in the profile")
    elif traced.exit_code not in (0, None):
        result.notes.append(f"the command exited with {traced.exit_code}; learn from a "
                            "successful run if that was not expected")
    return result


def learn_unit(unit: str, opts: LearnOptions) -> Result:
    if opts.duration is None:
        raise UserError("learning a unit needs --duration (e.g. --duration 10m): the service "
                        "does not end by itself")
    progress = ProgressLine(enabled=opts.progress)
    try:
        traced = trace_unit(unit, opts.duration, opts.exercise, on_progress=progress,
                            fast=opts.fast, keep_partial=opts.keep_partial)
    finally:
        progress.done()
    if not traced.started_ok and not traced.partial:
        # the unit is restored; a profile of a service that did not run teaches nothing
        raise UserError(f"{unit} did not start or did not stay up under tracing: "
                        f"nothing was learned; see journalctl -u {unit}")
    dropin = dropin_path(unit, TRACE_DROPIN)
    keep = existing_settings(traced.info, dropin)
    traced.profile.subject["unit_text"] = unit_text(traced.info, dropin)
    traced.profile.subject["kept"] = keep
    result = result_for_profile(traced.profile, opts.systemd_version, opts.bpf,
                                opts.allow_write, opts.ip_allow)
    result.notes += traced.notes
    if opts.validate and not traced.partial:
        checks = opts.checks or HealthChecks(exercise=opts.exercise)
        say = (lambda text: print(text, file=sys.stderr, flush=True)) if opts.progress else None
        validation = validate(unit, result.sandbox, checks, opts.max_trials, on_event=say,
                              written=sorted(result.profile.written_paths()))
        interrupts.check()  # a stage that caught the signal must not hand on a result
        with_validation(result, validation)
    return result
