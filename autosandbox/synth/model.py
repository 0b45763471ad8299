"""The contracts synthesis hands on: a Setting (one line of the drop-in, with its evidence),
an Omission (a row left out, and why) and the Sandbox they make up; and a Denial, the evidence
a trial hands back (validate/denials.py reads them), which the catalogue's triggers match.

All three are frozen: synthesis builds a Sandbox once, and relaxation (validate/relax.py)
returns a new one, so a candidate a trial ran with is never changed under its record. The
sequences are typed read-only; `settings` and `omitted`, which relaxation rewrites, are tuples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from autosandbox import __version__, unitfile
from autosandbox.synth.paths import Withheld, under, writable_anyway
from autosandbox.synth.target import Target


@dataclass(frozen=True)
class Setting:
    directive: str
    values: Sequence[str]  # rendered words; none writes `Directive=` (e.g. no capabilities)
    evidence: str


@dataclass(frozen=True)
class Omission:
    directive: str
    why: str


@dataclass(frozen=True)
class Sandbox:
    subject: str
    target: Target
    sources: Sequence[str]
    settings: tuple[Setting, ...] = ()
    omitted: tuple[Omission, ...] = ()
    hints: Sequence[str] = ()
    warnings: Sequence[str] = ()
    withheld: Sequence[Withheld] = ()  # grants asked for, not given
    # What the user named with --allow-write: relaxation withholds by the same list
    # (sensitive.withheld(path, sandbox.allow_write)).
    allow_write: Sequence[str] = ()
    # File systems strict leaves writable as systemd does (rules.separate_mounts: the service
    # writes a file directly in /run): what is withheld there is writable all the same.
    left_writable: Sequence[str] = ()

    def values(self, directive: str) -> list[str] | None:
        """Rendered words of a directive (all its lines joined); None if it is not set."""
        found = self.lines(directive)
        if not found:
            return None
        return [v for s in found for v in s.values]

    def lines(self, directive: str) -> tuple[Setting, ...]:
        """The settings of a directive, in order (systemd adds up a list's lines)."""
        return tuple(s for s in self.settings if s.directive == directive)

    def with_settings(self, settings: Iterable[Setting]) -> Sandbox:
        return replace(self, settings=tuple(settings))

    def replacing(self, old: Setting, *new: Setting) -> Sandbox:
        """`old` (this very line) replaced by `new` in its place; no `new`: removed."""
        out: list[Setting] = []
        for s in self.settings:
            out += new if s is old else (s,)
        return self.with_settings(out)

    def inserting(self, index: int, *new: Setting) -> Sandbox:
        return self.with_settings((*self.settings[:index], *new, *self.settings[index:]))

    def omitting(self, *omissions: Omission) -> Sandbox:
        return replace(self, omitted=(*self.omitted, *omissions))

    def render(self, header: bool = True) -> str:
        lines: list[str] = []
        if header:
            lines += unitfile.comment(
                f"Sandbox learned by autosandbox {__version__} for {self.subject} on "
                f"{datetime.now(UTC):%Y-%m-%d}; sources: {', '.join(self.sources)}; "
                f"target: {self.target.describe()}. Review before applying.")
        lines.append("[Service]")
        for s in self.settings:
            lines += unitfile.comment(s.evidence)
            lines.append(unitfile.assignment(s.directive, s.values))
        if self.hints:
            lines.append("")
            for h in self.hints:
                lines += unitfile.comment("Hint: " + h)
        if self.withheld:
            lines.append("")
            lines += unitfile.comment("Withheld (never granted on evidence alone):")
            opened = self.writable_anyway()
            for w in self.withheld:
                lines += unitfile.comment("  " + w.line())
            if opened:
                step = f"ProtectSystem={opened[0]}" if opened[0] else "ProtectSystem= unset"
                how = ("which leaves " + ", ".join(self.left_writable) + " writable"
                       if opened[0] == "strict" else "relaxed from strict")
                lines += unitfile.comment(
                    f"Yet writable all the same under {step} ({how}): "
                    f"{', '.join(w.path for w in opened[1])}")
        if self.omitted:
            lines.append("")
            lines += unitfile.comment("Left out:")
            for o in self.omitted:
                lines += unitfile.comment(f"  {o.directive}=: {o.why}")
        return unitfile.join_lines(lines)

    def writable_anyway(self) -> tuple[str, list[Withheld]] | None:
        """(ProtectSystem='s value, the withheld places it leaves writable): a step below
        strict (a relaxation) opens what the grants withheld. None: nothing opened, or the
        step is not ours to judge (the unit's own value)."""
        step = self.values("ProtectSystem")
        if step is None:  # unset by a relaxation (an omission says so), or the unit's own
            if not any(o.directive == "ProtectSystem" and o.why.startswith("relaxed")
                       for o in self.omitted):
                return None
            step = []
        value = step[-1] if step else ""
        home = (self.values("ProtectHome") or [""])[-1:] or [""]
        opened = [w for w in self.withheld
                  if (value != "strict" and writable_anyway(w.path, value, home[0]))
                  or any(under(w.path, m) for m in self.left_writable)]
        return (value, opened) if opened else None

    def to_json(self) -> dict[str, object]:
        opened = self.writable_anyway()
        return {
            "subject": self.subject,
            "target": {"version": self.target.version,
                       "features": sorted(self.target.features)},
            "sources": list(self.sources),
            "settings": [{"directive": s.directive, "values": list(s.values),
                          "evidence": s.evidence} for s in self.settings],
            "omitted": [{"directive": o.directive, "why": o.why} for o in self.omitted],
            "hints": list(self.hints),
            "warnings": list(self.warnings),
            "withheld": [{**w.to_json(), "writable_anyway": bool(opened and w in opened[1])}
                         for w in self.withheld],
            "allow_write": list(self.allow_write),
        }


@dataclass(frozen=True)
class Denial:
    """A denial seen during a trial, named as precisely as its source allows."""

    kind: str  # erofs, eacces, eperm, eafnosupport
    path: str | None
    source: str  # journal, audit, seccomp, log (the service's own log files)
    text: str
    syscall: str | None = None  # audit names the failing call (a journal line, some)
    family: str | None = None  # and, for socket(), the refused family
    uid: int | None = None  # effective uid of the caller, where audit says

    def key(self) -> tuple[str, str, str | None, str | None]:
        """The same denial in another trial (numbers in the text, pids, vary)."""
        return (self.source, self.kind, self.path,
                self.syscall or re.sub(r"\d+", "N", self.text)[:120])
