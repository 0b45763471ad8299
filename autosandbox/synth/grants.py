"""What a denial names, granted on one row: the functions the catalogue's relaxation triggers
refer to (synth/catalogue.py, Trigger), where relaxing is more than a step down the ladder.
Each takes the candidate and returns a new one with the Relaxation it made (None: nothing).

The records relaxation shares (Relaxation, Evidence) live here, below the catalogue that
names these functions, so that relax.py can walk the catalogue."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from autosandbox import unitfile
from autosandbox.linux.mounts import host_mounts, volatile
from autosandbox.synth.capneed import needed_capability
from autosandbox.synth.model import Denial, Sandbox, Setting
from autosandbox.synth.paths import under
from autosandbox.synth.sensitive import withheld
from autosandbox.synth.subject import EXEC_DIRS
from autosandbox.unitfile import clip


@dataclass
class Relaxation:
    trial: int
    directive: str
    before: str
    after: str
    why: str

    def to_json(self) -> dict[str, object]:
        return {"trial": self.trial, "directive": self.directive, "from": self.before,
                "to": self.after, "why": self.why}


@dataclass
class Evidence:
    """What relaxation may rely on besides the denials: who the processes may be, what the
    user allowed to be written, which paths the trial itself changed on disk."""

    may_be_root: bool = True  # the unit runs as root (or audit did not say otherwise)
    allowed: Sequence[str] = ()  # --allow-write
    changed: frozenset[str] = frozenset()  # paths whose owner/mode the trial changed
    log: list[str] = field(default_factory=list)  # what was not granted, and why
    home: str | None = None  # a user's manager: its user's home (sensitive.withheld)
    # files logrotate renames -> its configuration (linux/logrotate.py): never granted alone
    rotated: Mapping[str, str] = field(default_factory=dict)


Relaxed = tuple[Sandbox, Relaxation | None]
# Whether a trigger applies to this candidate and denial (synth/catalogue.py Trigger.when).
Check = Callable[[Sandbox, Denial], bool]
# What a trigger grants (Trigger.grant): the candidate widened by what the denial names.
Grant = Callable[[Sandbox, Denial, int, Evidence], Relaxed]


# -- address families ----------------------------------------------------------------------

def family_to_add(sb: Sandbox, dn: Denial) -> bool:
    """A refused family to add to a list that is not that family alone (a list of one that
    still refuses it is relaxed a step instead)."""
    fams = sb.values("RestrictAddressFamilies")
    return bool(dn.family) and fams not in (None, [dn.family])


def add_family(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxed:
    fams = sb.values("RestrictAddressFamilies") or []
    if dn.family is None or dn.family in fams:
        return sb, None
    new = sorted({*fams, dn.family} - {"none"})
    for s in sb.lines("RestrictAddressFamilies"):
        sb = sb.replacing(s, Setting(s.directive, new, f"{s.evidence}. {dn.family} added in "
                                                       f"trial {trial}: {clip(dn.text, 80)}"))
    return sb, Relaxation(trial, "RestrictAddressFamilies", " ".join(fams), " ".join(new),
                          f"{dn.source}: {clip(dn.text, 120)}")


# -- system calls ----------------------------------------------------------------------------

def _filter_allows(sb: Sandbox, current: list[str]) -> set[str]:
    groups = sb.target.groups
    allowed: set[str] = set()
    for v in current:
        allowed |= groups.get(v, frozenset()) if v.startswith("@") else {v}
    return allowed


def filter_refuses(sb: Sandbox, dn: Denial) -> bool:
    """The call is one the candidate's allow-list refuses and that the target knows: else
    the filter is not what refused it (a capability is)."""
    current = sb.values("SystemCallFilter")
    if current is None or any(v.startswith("~") for v in current) or not dn.syscall:
        return False
    groups = sb.target.groups
    return (dn.syscall not in _filter_allows(sb, current)
            and dn.syscall in groups.get("@known", {dn.syscall}))


def allow_syscall(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxed:
    """A call the filter refused: allow the smallest @system-service group holding it."""
    if not filter_refuses(sb, dn) or dn.syscall is None:
        return sb, None
    groups = sb.target.groups
    current = sb.values("SystemCallFilter") or []
    parts = [p for p in sb.target.service_parts if p.startswith("@") and p != "@default"]
    holding = sorted((p for p in parts if dn.syscall in groups.get(p, frozenset())),
                     key=lambda p: len(groups.get(p, frozenset())))
    add = holding[0] if holding else dn.syscall
    first = sb.lines("SystemCallFilter")[0]
    sb = sb.replacing(first, Setting(first.directive, [*first.values, add],
                                     f"{first.evidence}. {add} added in trial {trial}: "
                                     f"{clip(dn.text, 80)}"))
    return sb, Relaxation(trial, "SystemCallFilter", " ".join(current), f"+{add}",
                          f"{dn.source}: {clip(dn.text, 120)}")


# -- capabilities ----------------------------------------------------------------------------

def _caused_by_change(path: str | None, ev: Evidence) -> str | None:
    if not path:
        return None
    return next((c for c in ev.changed if under(path, c) or path == os.path.dirname(c)), None)


def add_capability(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxed:
    """The capability a refused call or access needs, if the evidence shows one."""
    caps = sb.values("CapabilityBoundingSet")
    if caps is None:
        return sb, None
    changed = _caused_by_change(dn.path, ev)
    if changed is not None:
        ev.log.append(f"no capability for {clip(dn.text, 80)}: the trial changed {changed} on disk")
        return sb, None
    cap, why = needed_capability(dn, ev.may_be_root, set(caps))
    if cap is None or cap in caps:
        if cap is None:
            ev.log.append(f"no capability for {clip(dn.text, 80)}: {why}")
        return sb, None
    new = sorted({*caps, cap})
    first, *extra = sb.lines("CapabilityBoundingSet")
    # one line holds the whole set (lines add up in systemd)
    sb = sb.replacing(first, Setting(first.directive, new, f"{first.evidence}. {cap} added "
                                     f"in trial {trial}: {clip(dn.text, 80)} ({clip(why, 80)})"))
    for s in extra:
        sb = sb.replacing(s)
    return sb, Relaxation(trial, "CapabilityBoundingSet", " ".join(caps), " ".join(new),
                          f"{dn.source}: {clip(dn.text, 100)}; {clip(why, 100)}")


# -- writable paths --------------------------------------------------------------------------

def _anchor(path: str, rotated: Mapping[str, str]) -> tuple[str | None, str]:
    """Where a denied write to `path` is allowed, or None and why not: the path itself when
    it is a directory, else its directory, since a journal line cannot tell a rewrite from a
    new file (a service that spools creates a new name each time); the file itself only when
    its directory is a shared system directory and logrotate does not rename it (a grant of
    the file would stay on the rotated one). Never further up: a write below a directory
    that does not exist fails with ENOENT, so such a denial names nothing we can trust.
    Symlinks are resolved: the mount systemd makes follows them."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        return real, ""
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        return None, f"{parent} does not exist"
    # nor on a file system a boot empties: after the next one the file would be missing, its
    # grant skipped, and the directory read-only to the new one (synth/paths.py, _place)
    if withheld(parent) is not None and os.path.exists(real) and real not in rotated and \
            not volatile(real, host_mounts()):
        return real, ""
    return parent, ""


def _writable(sb: Sandbox) -> list[str]:
    out = [w.lstrip("-") for w in unitfile.split_words(" ".join(sb.values("ReadWritePaths")
                                                                 or []))]
    for directive, base in EXEC_DIRS.items():
        out += [f"{base}/{v}" for v in sb.values(directive) or []]
    return out


def with_writable(sb: Sandbox, value: str, evidence: str) -> Sandbox:
    """A ReadWritePaths= line after the last one, else after ProtectSystem=, else first."""
    idx = [i for i, s in enumerate(sb.settings) if s.directive == "ReadWritePaths"]
    if not idx:
        idx = [i for i, s in enumerate(sb.settings) if s.directive == "ProtectSystem"][:1]
    return sb.inserting(idx[-1] + 1 if idx else 0, Setting("ReadWritePaths", [value], evidence))


def add_writable(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxed:
    """A write the read-only file system refused: its place made writable, unless sensitive
    (sensitive.withheld) or not one a denial can name."""
    if dn.path is None:
        return sb, None
    anchor, why_not = _anchor(dn.path, ev.rotated)
    if anchor is None:
        ev.log.append(f"not made writable: {dn.path} ({why_not})")
        return sb, None
    if any(under(anchor, w) for w in _writable(sb)):
        return sb, None  # already writable: something else broke it
    refused = withheld(anchor, ev.allowed, ev.home)
    if refused is not None:
        real = os.path.realpath(dn.path)
        rotation = (f"; logrotate renames {real} ({ev.rotated[real]}), so the file alone "
                    "is no grant" if real in ev.rotated else "")
        ev.log.append(f"not made writable: {anchor} ({refused}{rotation}; --allow-write "
                      f"{anchor} grants it)")
        return sb, None
    value = unitfile.path_value(anchor)
    if value is None:
        ev.log.append(f"not made writable: {anchor!r} cannot be written safely in a unit file")
        return sb, None
    sb = with_writable(sb, value, f"denied in trial {trial}: {clip(dn.text, 120)}")
    return sb, Relaxation(trial, "ReadWritePaths", "", anchor, f"{dn.source}: {clip(dn.text, 120)}")
