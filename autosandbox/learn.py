"""The learn pipeline: trace -> profile -> synthesize -> check. One function per subject."""

from __future__ import annotations

from dataclasses import dataclass

from autosandbox.errors import UserError
from autosandbox.report import ProgressLine
from autosandbox.results import Result, result_for_profile
from autosandbox.trace.command import trace_command


@dataclass
class LearnOptions:
    duration: float | None = None
    progress: bool = True
    systemd_version: int | None = None
    bpf: bool | None = None
    exercise: str | None = None


def learn_command(argv: list[str], opts: LearnOptions) -> Result:
    progress = ProgressLine(enabled=opts.progress)
    try:
        traced = trace_command(argv, opts.duration, on_progress=progress)
    finally:
        progress.done()
    result = result_for_profile(traced.profile, opts.systemd_version, opts.bpf)
    if traced.interrupted:
        result.notes.append("the command was stopped before it ended; code paths it did not "
                            "reach are not in the profile")
    elif traced.exit_code not in (0, None):
        result.notes.append(f"the command exited with {traced.exit_code}; learn from a "
                            "successful run if that was not expected")
    return result


def learn_unit(unit: str, opts: LearnOptions) -> Result:
    raise UserError("learning a systemd unit is not available yet")
