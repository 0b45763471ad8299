"""Relaxing a candidate: with evidence first (a denied path, a refused family), else one step
down the ladder of the directive bisection blamed. The catalogue says how each one relaxes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from autosandbox import unitfile
from autosandbox.synth.catalogue import BY_NAME, CATALOGUE, COMPANIONS, TIGHTEST_ONLY
from autosandbox.synth.paths import under
from autosandbox.synth.rules import Setting
from autosandbox.synth.sensitive import withheld
from autosandbox.synth.synthesize import Sandbox
from autosandbox.synth.target import system_service_parts
from autosandbox.validate.capneed import needed_capability
from autosandbox.validate.denials import Denial
from autosandbox.validate.snapshot import Change


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


def row_of(directive: str) -> str:
    return COMPANIONS.get(directive, directive)


def restriction_rows(sb: Sandbox) -> list[str]:
    """Catalogue rows the candidate sets that restrict (bisection's search space), in
    catalogue order with ProtectSystem last: it stays strict unless nothing else works."""
    present = {row_of(s.directive) for s in sb.settings}
    rows = [d.name for d in CATALOGUE if d.name in present and not d.grants]
    if "ProtectSystem" in rows:
        rows.remove("ProtectSystem")
        rows.append("ProtectSystem")
    # Rows not in the catalogue (a hand-written candidate) are bisected too, after the rest.
    rows += sorted(present - set(rows) - {d.name for d in CATALOGUE if d.grants})
    return rows


def subset(sb: Sandbox, rows: set[str]) -> Sandbox:
    """The candidate with only these restriction rows (grants are always kept)."""
    keep = [s for s in sb.settings
            if row_of(s.directive) in rows or (row_of(s.directive) in BY_NAME
                                               and BY_NAME[row_of(s.directive)].grants)]
    return replace(sb, settings=keep)  # the rest (withheld, allow_write) as is


def _value(sb: Sandbox, directive: str) -> str | None:
    vals = sb.values(directive)
    return None if vals is None else " ".join(vals)


def relax_row(sb: Sandbox, row: str, trial: int, why: str) -> Relaxation | None:
    """One step down the row's ladder; a list value (families, syscalls) drops entirely."""
    current = _value(sb, row)
    if current is None:
        return None
    d = BY_NAME.get(row)
    nxt = d.looser(current) if d is not None else None
    if d is None or nxt is None or nxt.startswith("<") or nxt == current:
        nxt = ""
    members = [s for s in sb.settings if row_of(s.directive) == row]
    if nxt:
        first = members[0]
        idx = sb.settings.index(first)
        for s in members:
            sb.settings.remove(s)
        sb.settings.insert(idx, Setting(row, nxt.split(), f"{first.evidence}. Relaxed in "
                                                          f"trial {trial} from {current}: {why}"))
        # a companion (SystemCallErrorNumber=) still applies to the looser value
        sb.settings[idx + 1:idx + 1] = [s for s in members
                                        if s.directive != row and s.directive not in TIGHTEST_ONLY]
    else:
        for s in members:
            sb.settings.remove(s)
        from autosandbox.synth.rules import Omission
        sb.omitted.append(Omission(row, f"relaxed in trial {trial} (was {current}): {why}"))
    return Relaxation(trial, row, current, nxt or "(unset)", why)


def _anchor(path: str) -> tuple[str | None, str]:
    """Where a denied write to `path` is allowed, or None and why not: the path itself when
    it is a directory, else its directory, since a journal line cannot tell a rewrite from a
    new file (a service that spools creates a new name each time); the file itself only when
    its directory is a shared system directory. Never further up: a write below a directory
    that does not exist fails with ENOENT, so such a denial names nothing we can trust.
    Symlinks are resolved: the mount systemd makes follows them."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        return real, ""
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        return None, f"{parent} does not exist"
    if withheld(parent) is not None and os.path.exists(real):
        return real, ""
    return parent, ""


def _writable(sb: Sandbox) -> list[str]:
    out = [w.lstrip("-") for w in unitfile.split_words(" ".join(sb.values("ReadWritePaths")
                                                                 or []))]
    for directive, base in (("StateDirectory", "/var/lib/"), ("LogsDirectory", "/var/log/"),
                            ("CacheDirectory", "/var/cache/"), ("RuntimeDirectory", "/run/")):
        out += [base + v for v in sb.values(directive) or []]
    return out


# A refused lookup is not a breakage: Python stats ~/.local at every start, and a program that
# needs a file opens it. Seen in the VM: a stat of /root/.local under ProtectHome=yes.
LOOKUPS = frozenset({"stat", "lstat", "newfstatat", "fstatat64", "statx", "access", "faccessat",
                     "faccessat2", "readlink", "readlinkat", "getxattr", "lgetxattr",
                     "listxattr", "llistxattr", "statfs"})


@dataclass
class Evidence:
    """What relaxation may rely on besides the denials: who the processes may be, what the
    user allowed to be written, which paths the trial itself changed on disk."""

    may_be_root: bool = True  # the unit runs as root (or audit did not say otherwise)
    allowed: Sequence[str] = ()  # --allow-write
    changed: frozenset[str] = frozenset()  # paths whose owner/mode the trial changed
    log: list[str] = field(default_factory=list)  # what was not granted, and why
    home: str | None = None  # a user's manager: its user's home (sensitive.withheld)


def _caused_by_change(path: str | None, ev: Evidence) -> str | None:
    if not path:
        return None
    return next((c for c in ev.changed if under(path, c) or path == os.path.dirname(c)), None)


def _add_capability(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxation | None:
    caps = sb.values("CapabilityBoundingSet")
    if caps is None:
        return None
    changed = _caused_by_change(dn.path, ev)
    if changed is not None:
        ev.log.append(f"no capability for {dn.text[:80]}: the trial changed {changed} on disk")
        return None
    cap, why = needed_capability(dn, ev.may_be_root, set(caps))
    if cap is None or cap in caps:
        if cap is None:
            ev.log.append(f"no capability for {dn.text[:80]}: {why}")
        return None
    new = sorted({*caps, cap})
    lines = [s for s in sb.settings if s.directive == "CapabilityBoundingSet"]
    lines[0].values = new  # one line holds the whole set (lines add up in systemd)
    lines[0].evidence += f". {cap} added in trial {trial}: {dn.text[:80]} ({why[:80]})"
    for extra in lines[1:]:
        sb.settings.remove(extra)
    return Relaxation(trial, "CapabilityBoundingSet", " ".join(caps), " ".join(new),
                      f"{dn.source}: {dn.text[:100]}; {why[:100]}")


# Rows a denial relaxes one step (the catalogue's relax_kinds/relax_paths); a row named by
# the errno alone comes first: a journal line may mention a path that is not the object.
_DENIAL_ROWS = sorted((d for d in CATALOGUE if d.relax_kinds or d.relax_paths),
                      key=lambda d: bool(d.relax_paths))
_API_FS = ("/proc/", "/sys/", "/dev/")


def relax_by_evidence(sb: Sandbox, denials: list[Denial], trial: int,
                      ev: Evidence | None = None) -> list[Relaxation]:
    ev = ev if ev is not None else Evidence()
    done: list[Relaxation] = []
    for dn in denials:
        if dn.syscall in LOOKUPS:
            continue
        r = _relax_for(sb, dn, trial, ev)
        if r is not None:
            done.append(r)
    return done


def _relax_for(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxation | None:
    """The one relaxation a denial is evidence for, the most specific first: a refused
    family, a refused call (the filter's, else a capability's), a catalogue row the denial
    names, a path made writable, a capability for an access its mode bits refuse."""
    fams = sb.values("RestrictAddressFamilies")
    if dn.kind == "eafnosupport" and dn.family and fams not in (None, [dn.family]):
        return _add_family(sb, dn, trial)
    if dn.kind == "eperm" and dn.syscall:
        r = _allow_syscall(sb, dn, trial) if sb.values("SystemCallFilter") is not None else None
        return r if r is not None else _add_capability(sb, dn, trial, ev)
    row = next((d.name for d in _DENIAL_ROWS
                if sb.values(d.name) is not None and d.relaxed_by(dn.kind, dn.path)), None)
    if row is not None:
        return relax_row(sb, row, trial, f"{dn.source}: {dn.text}")
    if dn.path and dn.kind == "erofs" and not dn.path.startswith(_API_FS):
        return _add_writable(sb, dn, dn.path, trial, ev)
    if dn.kind == "eacces" and dn.path:
        return _add_capability(sb, dn, trial, ev)
    return None


def _add_family(sb: Sandbox, dn: Denial, trial: int) -> Relaxation | None:
    fams = sb.values("RestrictAddressFamilies") or []
    if dn.family is None or dn.family in fams:
        return None
    new = sorted({*fams, dn.family} - {"none"})
    for s in sb.settings:
        if s.directive == "RestrictAddressFamilies":
            s.values = new
            s.evidence += f". {dn.family} added in trial {trial}: {dn.text[:80]}"
    return Relaxation(trial, "RestrictAddressFamilies", " ".join(fams), " ".join(new),
                      f"{dn.source}: {dn.text[:120]}")


def _add_writable(sb: Sandbox, dn: Denial, path: str, trial: int,
                  ev: Evidence) -> Relaxation | None:
    anchor, why_not = _anchor(path)
    if anchor is None:
        ev.log.append(f"not made writable: {path} ({why_not})")
        return None
    if any(under(anchor, w) for w in _writable(sb)):
        return None  # already writable: something else broke it
    refused = withheld(anchor, ev.allowed, ev.home)
    if refused is not None:
        ev.log.append(f"not made writable: {anchor} ({refused}; --allow-write {anchor} "
                      "grants it)")
        return None
    value = unitfile.path_value(anchor)
    if value is None:
        ev.log.append(f"not made writable: {anchor!r} cannot be written safely in a unit file")
        return None
    sb.settings.insert(_after(sb, "ReadWritePaths"), Setting(
        "ReadWritePaths", [value], f"denied in trial {trial}: {dn.text[:120]}"))
    return Relaxation(trial, "ReadWritePaths", "", anchor, f"{dn.source}: {dn.text[:120]}")


def relax_disk(sb: Sandbox, changes: list[Change], trial: int,
               ev: Evidence) -> list[Relaxation]:
    """A candidate changed owners or modes on disk. A directory systemd manages for it
    (StateDirectory= and friends: chowned to the unit's user, its mode reset, removed at stop)
    becomes a plain ReadWritePaths= entry; files that only lost permission bits relax
    UMask= one step (the service created them again under it)."""
    done: list[Relaxation] = []
    managed = []
    for c in changes:
        b, a = c.before, c.after
        narrowed = b.kind == a.kind and (b.uid, b.gid) == (a.uid, a.gid) and \
            a.mode & ~b.mode == 0 and a.mode != b.mode and b.acl == a.acl
        if not narrowed or b.kind == "dir":
            managed.append(c.path)
    for directive, base in (("StateDirectory", "/var/lib"), ("LogsDirectory", "/var/log"),
                            ("CacheDirectory", "/var/cache"), ("RuntimeDirectory", "/run")):
        for s in [x for x in sb.settings if x.directive == directive]:
            for raw in list(s.values):
                names = unitfile.split_words(raw)
                full = f"{base}/{names[0]}" if names else ""
                hit = next((p for p in managed if full and under(p, full)), None)
                if hit is None:
                    continue
                value = unitfile.path_value(full)
                if value is None or withheld(full, ev.allowed, ev.home) is not None:
                    ev.log.append(f"{directive}={raw} changed {hit}: dropped, not replaced")
                    value = None
                s.values.remove(raw)
                if not s.values:
                    sb.settings.remove(s)
                if value is not None:
                    sb.settings.insert(_after(sb, "ReadWritePaths"), Setting(
                        "ReadWritePaths", [value], f"{directive}={raw} changed {hit} on disk "
                                                   f"in trial {trial}: the directory as it is"))
                done.append(Relaxation(trial, directive, raw, f"ReadWritePaths={full}",
                                       f"it changed {hit} on disk"))
    narrowed_files = [c for c in changes if c.path not in managed]
    if narrowed_files and sb.values("UMask") is not None:
        r = relax_row(sb, "UMask", trial, f"modes changed on disk: {narrowed_files[0].line()}")
        done += [r] if r else []
    return done


def _after(sb: Sandbox, directive: str) -> int:
    idx = [i for i, s in enumerate(sb.settings) if s.directive == directive]
    if idx:
        return idx[-1] + 1
    ps = [i for i, s in enumerate(sb.settings) if s.directive == "ProtectSystem"]
    return ps[0] + 1 if ps else 0


def _allow_syscall(sb: Sandbox, dn: Denial, trial: int) -> Relaxation | None:
    """A call the filter refused: allow the smallest @system-service group holding it."""
    groups = sb.target.groups
    current = sb.values("SystemCallFilter") or []
    if any(v.startswith("~") for v in current) or not dn.syscall:
        return None
    allowed: set[str] = set()
    for v in current:
        allowed |= groups.get(v, frozenset()) if v.startswith("@") else {v}
    if dn.syscall in allowed or dn.syscall not in groups.get("@known", {dn.syscall}):
        return None
    parts = [p for p in system_service_parts() if p.startswith("@") and p != "@default"]
    holding = sorted((p for p in parts if dn.syscall in groups.get(p, frozenset())),
                     key=lambda p: len(groups.get(p, frozenset())))
    add = holding[0] if holding else dn.syscall
    for s in sb.settings:
        if s.directive == "SystemCallFilter":
            s.values = [*s.values, add]
            s.evidence += f". {add} added in trial {trial}: {dn.text[:80]}"
            break
    return Relaxation(trial, "SystemCallFilter", " ".join(current), f"+{add}",
                      f"{dn.source}: {dn.text[:120]}")
