"""A learned result: the drop-in, its sandbox, the checks and scores, and how to print them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autosandbox.errors import HealthError
from autosandbox.profile import Profile
from autosandbox.synth.model import Sandbox
from autosandbox.synth.specifiers import for_every_instance as for_every_instance_of
from autosandbox.synth.subject import subject_of
from autosandbox.synth.synthesize import synthesize
from autosandbox.synth.target import target_for
from autosandbox.systemd import analyze
from autosandbox.validate.trials import Validation, render_validated


@dataclass
class Result:
    profile: Profile
    sandbox: Sandbox
    dropin: str
    unit_text: str  # the unit the drop-in was checked against
    verify_warnings: list[str]
    before: analyze.Score | None
    after: analyze.Score | None
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)
    profile_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Why the drop-in is not proven on the unit (None: validated). Said before anything else.
    unvalidated: str | None = "not validated: synthesized from the trace only, no trial run"

    @property
    def validated(self) -> bool:
        return self.unvalidated is None

    def messages(self, output: Path | None) -> list[str]:
        out = []
        if self.unvalidated is not None:
            out.append(self.unvalidated)
        if output is not None:
            out.append(f"drop-in written to {output}")
        if self.profile_path is not None:
            out.append(f"profile written to {self.profile_path}")
        if self.before and self.after:
            out.append(f"exposure (systemd-analyze security): {self.before.exposure} "
                       f"{self.before.label} -> {self.after.exposure} {self.after.label}")
        out += [f"note: {n}" for n in self.notes]
        out += [f"warning: {w}" for w in self.sandbox.warnings]
        out += [f"systemd-analyze verify: {w}" for w in self.verify_warnings]
        return out

    def to_json(self, output: Path | None = None) -> dict[str, Any]:
        def score(s: analyze.Score | None) -> dict[str, Any] | None:
            return {"exposure": s.exposure, "label": s.label} if s else None
        return {
            "dropin": self.dropin,
            "output": str(output) if output else None,
            "profile": str(self.profile_path) if self.profile_path else None,
            "sandbox": self.sandbox.to_json(),
            "exposure": {"before": score(self.before), "after": score(self.after)},
            "verify_warnings": self.verify_warnings,
            "notes": self.notes,
            "validated": self.validated,
            "unvalidated": self.unvalidated,
            "exit_code": self.exit_code,
            **self.extra,
        }


def check_unit_for(profile: Profile) -> str:
    if profile.subject.command:
        return analyze.command_unit(profile.subject.command)
    return analyze.command_unit(["/bin/true"])


def result_for_profile(profile: Profile, systemd_version: int | None = None,
                       bpf: bool | None = None, allow_write: Sequence[str] = (),
                       ip_allow: Sequence[str] = ()) -> Result:
    # A unit's profile carries the unit as it was learned: `synthesize PROFILE` later scores
    # and keeps against the same text as `learn` did.
    stored_text = profile.subject.unit_text
    keep = profile.subject.kept
    target = target_for(systemd_version, bpf)
    sandbox = synthesize(profile, target, keep=keep, allow_write=allow_write,
                         ip_allow=ip_allow)
    base = stored_text if stored_text is not None else check_unit_for(profile)
    result = Result(profile, sandbox, "", base, [], None, None)
    # checked under the unit's own name: specifiers (User=%i) resolve as in the real unit
    result.before = analyze.security(base, None, _check_name(result), _user_manager(result))
    return _checked(result, sandbox.render())


def _check_name(result: Result) -> str | None:
    """The name the drop-in is checked under: the unit's own, when its text is stored."""
    subject = result.profile.subject
    return subject.unit or None if subject.unit_text is not None else None


def _checked(result: Result, dropin: str) -> Result:
    """`dropin` becomes the result's; its verify warnings and exposure follow it."""
    name = _check_name(result)
    before = set(analyze.verify(result.unit_text, None, name))  # the unit's own are not ours
    result.dropin = dropin
    result.verify_warnings = [w for w in analyze.verify(result.unit_text, dropin, name)
                              if w not in before]
    result.after = analyze.security(result.unit_text, dropin, name, _user_manager(result))
    return result


def _user_manager(result: Result) -> bool:
    """Scored as systemd --user scores a unit of a user's manager."""
    return result.profile.subject.manager == "user"


def for_every_instance(result: Result, validation: Validation | None = None) -> Result:
    """--template: paths named after the instance learned on are written with its specifier
    (synth/specifiers.py), so each instance gets its own; checked again as the instance.
    After `validation`, its verdict heads the text as before (for the instance validated on,
    the specifier expands to the very paths the trials ran with)."""
    instance = subject_of(result.profile).instance
    sandbox, changed = for_every_instance_of(result.sandbox, instance or "")
    if not changed:
        return result
    result.sandbox = sandbox
    result.notes.append(f"paths named after {instance} are written for every instance: "
                        + ", ".join(changed))
    if validation is not None:
        return _checked(result, render_validated(replace(validation, sandbox=sandbox)))
    return _checked(result, sandbox.render())


def with_validation(result: Result, validation: Validation) -> Result:
    """The validated (possibly relaxed) drop-in replaces the learned one; scores follow it."""
    result.sandbox = validation.sandbox
    _checked(result, render_validated(validation))
    result.notes += validation.notes
    result.extra["validation"] = {
        "healthy": validation.healthy,
        "restarts": validation.restarts,
        "trials": [t.to_json() for t in validation.trials],
    }
    cycle = ("each: the checks' connections through "
             f"{validation.per_connection}, every instance they started ended cleanly"
             if validation.per_connection else "each: start, workload, reload, stop, start")
    if validation.healthy:
        result.unvalidated = None
        result.notes.append(f"validated: healthy in {validation.restarts} "
                            f"{'trial' if validation.per_connection else 'restart'}(s), the "
                            f"baseline included ({cycle})")
    else:
        result.exit_code = HealthError.exit_code
        result.unvalidated = (f"NOT VALIDATED: no healthy sandbox found in "
                              f"{validation.restarts} restart(s); the drop-in is the last "
                              "candidate, kept for review only ('apply' refuses it without "
                              "--force)")
    return result
