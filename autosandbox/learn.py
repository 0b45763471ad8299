"""The learn pipeline: trace -> profile -> synthesize -> check. One function per subject."""

from __future__ import annotations

from dataclasses import dataclass, replace

from autosandbox import interrupts
from autosandbox.errors import UserError
from autosandbox.report import QUIET, ProgressLine, Reporter
from autosandbox.results import (
    Result,
    for_every_instance,
    result_for_profile,
    with_validation,
)
from autosandbox.systemd.dropins import TRACE_DROPIN, dropin_path
from autosandbox.systemd.instances import template_info
from autosandbox.systemd.manager import Manager, template_of
from autosandbox.systemd.session import (
    existing_settings,
    session_programs,
    sessions_refusal,
    unit_text,
)
from autosandbox.trace.command import trace_command
from autosandbox.trace.unit import LearnTarget, learn_target, trace_unit
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
    template: bool = False  # the result is for every instance (NAME@.service.d/)
    sessions: bool = False  # learn a unit that opens users' login sessions all the same


def _reporter(opts: LearnOptions) -> Reporter:
    """The one channel every stage of a learn reports through (stderr, unless quiet)."""
    return ProgressLine() if opts.progress else QUIET


def learn_command(argv: list[str], opts: LearnOptions) -> Result:
    reporter = _reporter(opts)
    try:
        traced = trace_command(argv, opts.duration, reporter=reporter, fast=opts.fast,
                               keep_partial=opts.keep_partial)
    finally:
        reporter.done()
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


def _unit_duration(opts: LearnOptions) -> float:
    if opts.duration is None:
        raise UserError("learning a unit needs --duration (e.g. --duration 10m): the service "
                        "does not end by itself")
    return opts.duration


def unit_target(name: str, opts: LearnOptions) -> LearnTarget:
    """The service `learn NAME` traces (NAME may be its .socket or .timer), checked before
    anything starts."""
    _unit_duration(opts)
    mgr = Manager()
    target = learn_target(mgr, name)
    if opts.template and target.per_connection:
        raise UserError(f"{name} is started per connection by {target.via}: learn "
                        f"{target.service} (it is learned for every instance) without "
                        "--template")
    if opts.template:
        template_of(target.service)  # an instance, or a one-line refusal
    # a per-connection template is read from a probe instance (systemd loads no bare template)
    info = template_info(mgr, target.service) if target.per_connection else \
        mgr.info(target.service)
    mgr.refuse_bus(target.service)
    sessions = session_programs(info)
    if sessions and not opts.sessions:
        raise sessions_refusal(target.service, sessions[0])
    return target


def learn_unit(target: LearnTarget, opts: LearnOptions) -> Result:
    unit = target.service
    duration = _unit_duration(opts)
    reporter = _reporter(opts)
    try:
        traced = trace_unit(unit, duration, opts.exercise, reporter=reporter,
                            fast=opts.fast, keep_partial=opts.keep_partial,
                            scheduled=target.scheduled,
                            per_connection=target.per_connection)
    finally:
        reporter.done()
    if target.per_connection and not traced.instances and not traced.partial:
        raise UserError(f"no connection to {target.via} started an instance of {unit} within "
                        "--duration: nothing was learned (instances already running are not "
                        "traced; --exercise can open connections)")
    if target.scheduled and not traced.runs and not traced.partial:
        raise UserError(f"{target.via} started no run of {unit} within --duration: nothing "
                        f"was learned (systemctl list-timers {target.via} shows the next; a "
                        f"run started by hand in the window is traced too)")
    if not traced.started_ok and not traced.partial:
        # the unit is restored; a profile of a service that did not run teaches nothing
        why = f" ({traced.failure})" if traced.failure else ""
        raise UserError(f"{unit} did not start or did not stay up under tracing{why}: "
                        f"nothing was learned; see journalctl -u {unit}")
    if not traced.events and not traced.partial:
        # a tracer that could not write (a root of its own, a full /run) is no evidence
        raise UserError(f"the trace of {unit} is empty (its Exec lines reported nothing): "
                        f"nothing was learned; see journalctl -u {unit}")
    # a program the unit started (a wrapper's sshd, say), seen only in the trace
    sessions = sorted(p for p, bits in traced.profile.execs.items() if bits.get("sessions"))
    if sessions and not opts.sessions:
        raise sessions_refusal(unit, sessions[0], traced=True)
    dropin = dropin_path(unit, TRACE_DROPIN)
    keep = existing_settings(traced.info, dropin)
    traced.profile.subject = replace(traced.profile.subject,
                                     unit_text=unit_text(traced.info, dropin), kept=keep)
    result = result_for_profile(traced.profile, opts.systemd_version, opts.bpf,
                                opts.allow_write, opts.ip_allow)
    result.notes += traced.notes
    if sessions:
        result.notes.append(f"{sessions[0]} opens users' login sessions (--sessions): this "
                            "sandbox confines every session it starts; test a login or a job "
                            "under it before applying")
    if target.via is not None:
        result.notes.append(f"learned {unit}, which {target.via} starts; {target.via} was "
                            "left untouched")
    if target.asked is not None:
        result.notes.append(f"{target.asked} is one of the instances {target.via} starts per "
                            f"connection: learned their template {unit} instead")
    if traced.instances is not None:
        result.notes.append(f"{traced.instances} instance(s) of {unit} started by "
                            f"{target.via} were traced (none stopped or restarted) and "
                            "their profiles merged")
    if traced.runs is not None:
        result.notes.append(f"{traced.runs} run(s) of {unit} started by {target.via} were "
                            "traced (no run off its schedule)")
    if opts.template:
        result.extra["template"] = template_of(unit)
        result.notes.append(f"for every instance of {template_of(unit)}: learned and "
                            f"validated on {unit}")
        result = for_every_instance(result)  # the trials run the text that is installed
    if opts.validate and not traced.partial:
        checks = opts.checks or HealthChecks(exercise=opts.exercise)
        validation = validate(unit, result.sandbox, checks, opts.max_trials, reporter=reporter,
                              written=sorted(result.profile.written_paths()),
                              per_connection=target.via if target.per_connection else None)
        interrupts.check()  # a stage that caught the signal must not hand on a result
        with_validation(result, validation)
        if opts.template:  # paths a trial added; the same text for this instance
            result = for_every_instance(result, validation)
    return result
