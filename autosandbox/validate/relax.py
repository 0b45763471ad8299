"""Relaxing a candidate: with evidence first (a denied path, a refused family), else one step
down the ladder of the directive bisection blamed. The catalogue says how each one relaxes:
which denials name a row (its triggers) and, where that is more than a step, the function
in grants.py that widens it. Every relaxation returns a new Sandbox; the one given is left
as it was (a trial's record keeps the candidate it ran with)."""

from __future__ import annotations

from autosandbox import unitfile
from autosandbox.synth.catalogue import BY_NAME, CATALOGUE, COMPANIONS, TIGHTEST_ONLY
from autosandbox.synth.grants import Evidence, Relaxation, Relaxed, with_writable
from autosandbox.synth.model import Denial, Omission, Sandbox, Setting
from autosandbox.synth.paths import under
from autosandbox.synth.sensitive import withheld
from autosandbox.synth.subject import EXEC_DIRS
from autosandbox.validate.snapshot import Change


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
    return sb.with_settings(  # the rest (withheld, allow_write) as is
        s for s in sb.settings
        if row_of(s.directive) in rows or (row_of(s.directive) in BY_NAME
                                           and BY_NAME[row_of(s.directive)].grants))


def _value(sb: Sandbox, directive: str) -> str | None:
    vals = sb.values(directive)
    return None if vals is None else " ".join(vals)


def relax_row(sb: Sandbox, row: str, trial: int, why: str) -> Relaxed:
    """One step down the row's ladder; a list value (families, syscalls) drops entirely."""
    current = _value(sb, row)
    if current is None:
        return sb, None
    d = BY_NAME.get(row)
    nxt = d.looser(current) if d is not None else None
    if d is None or nxt is None or nxt.startswith("<") or nxt == current:
        nxt = ""
    members = [s for s in sb.settings if row_of(s.directive) == row]
    idx = sb.settings.index(members[0])
    rest = sb.with_settings(s for s in sb.settings if row_of(s.directive) != row)
    if nxt:
        looser = Setting(row, nxt.split(), f"{members[0].evidence}. Relaxed in trial {trial} "
                                           f"from {current}: {why}")
        # a companion (SystemCallErrorNumber=) still applies to the looser value
        companions = [s for s in members
                      if s.directive != row and s.directive not in TIGHTEST_ONLY]
        sb = rest.inserting(idx, looser, *companions)
    else:
        sb = rest.omitting(Omission(row, f"relaxed in trial {trial} (was {current}): {why}"))
    return sb, Relaxation(trial, row, current, nxt or "(unset)", why)


# A refused lookup is not a breakage: Python stats ~/.local at every start, and a program that
# needs a file opens it. Seen in the VM: a stat of /root/.local under ProtectHome=yes.
LOOKUPS = frozenset({"stat", "lstat", "newfstatat", "fstatat64", "statx", "access", "faccessat",
                     "faccessat2", "readlink", "readlinkat", "getxattr", "lgetxattr",
                     "listxattr", "llistxattr", "statfs"})


# Every row's triggers, in the order they are tried: catalogue.Stage, then catalogue order.
_TRIGGERS = sorted(((d, t) for d in CATALOGUE for t in d.relax), key=lambda dt: dt[1].stage)


def relax_by_evidence(sb: Sandbox, denials: list[Denial], trial: int,
                      ev: Evidence | None = None) -> tuple[Sandbox, list[Relaxation]]:
    ev = ev if ev is not None else Evidence()
    done: list[Relaxation] = []
    for dn in denials:
        if dn.syscall in LOOKUPS:
            continue
        sb, r = _relax_for(sb, dn, trial, ev)
        if r is not None:
            done.append(r)
    return sb, done


def _relax_for(sb: Sandbox, dn: Denial, trial: int, ev: Evidence) -> Relaxed:
    """The one relaxation a denial is evidence for: the first trigger that applies decides
    (the most specific first: a refused family, a refused call, the filter's else a
    capability's, a catalogue row the denial names, a path made writable, a capability for
    an access its mode bits refuse)."""
    for d, t in _TRIGGERS:
        if not t.matches(dn):
            continue
        if t.when is not None:
            applies = t.when(sb, dn)
        else:  # a grant decides itself; a step needs the row set
            applies = t.grant is not None or sb.values(d.name) is not None
        if not applies:
            continue
        if t.grant is None:
            return relax_row(sb, d.name, trial, f"{dn.source}: {dn.text}")
        return t.grant(sb, dn, trial, ev)
    return sb, None


def relax_disk(sb: Sandbox, changes: list[Change], trial: int,
               ev: Evidence) -> tuple[Sandbox, list[Relaxation]]:
    """A candidate changed owners or modes on disk. A directory systemd manages for it
    (StateDirectory= and friends: chowned to the unit's user, its mode reset, removed at stop)
    becomes a plain ReadWritePaths= entry; files that only lost permission bits relax
    UMask= one step (the service created them again under it)."""
    done: list[Relaxation] = []
    managed = []
    removed = {c.path for c in changes if c.after.kind == "missing"}
    for c in changes:
        b, a = c.before, c.after
        narrowed = b.kind == a.kind and (b.uid, b.gid) == (a.uid, a.gid) and \
            a.mode & ~b.mode == 0 and a.mode != b.mode and b.acl == a.acl
        if not narrowed or b.kind == "dir":
            managed.append(c.path)

    def systemds(path: str, directory: str) -> bool:
        """A change systemd's management of `directory` explains: its owner or mode, or
        its removal at stop (the directory goes with all it holds). An entry removed from
        a directory that stayed is the service's own doing (dovecot deletes its sockets as
        it fails: taken for systemd's, RuntimeDirectory= became a ReadWritePaths= entry
        that no boot creates, and dovecot no longer started after one)."""
        return under(path, directory) and (path not in removed or path == directory
                                           or directory in removed)
    for directive, base in EXEC_DIRS.items():
        for s in sb.lines(directive):
            line: Setting | None = s  # this line as it now stands in `sb`
            for raw in s.values:
                names = unitfile.split_words(raw)
                full = f"{base}/{names[0]}" if names else ""
                hit = next((p for p in managed if full and systemds(p, full)), None)
                if hit is None or line is None:
                    continue
                if directive == "RuntimeDirectory" and full in removed:
                    # removed at stop: kept, it is still made at every start (a boot empties
                    # /run: a plain ReadWritePaths= entry in its place would then be missing
                    # and fail the start, 226/NAMESPACE); with Preserve= set, the service
                    # removed it itself
                    if sb.values("RuntimeDirectoryPreserve") is None:
                        idx = sb.settings.index(line)
                        sb = sb.inserting(idx + 1, Setting(
                            "RuntimeDirectoryPreserve", ["yes"],
                            f"systemd removed {full} at a stop in trial {trial}, which the "
                            "unit as found keeps"))
                        done.append(Relaxation(trial, "RuntimeDirectoryPreserve", "", "yes",
                                               f"{full} removed at stop"))
                    continue
                value = unitfile.path_value(full)
                if value is None or withheld(full, ev.allowed, ev.home) is not None:
                    ev.log.append(f"{directive}={raw} changed {hit}: dropped, not replaced")
                    value = None
                kept = list(line.values)
                kept.remove(raw)
                new = Setting(line.directive, kept, line.evidence) if kept else None
                sb = sb.replacing(line, *([new] if new is not None else []))
                line = new
                if value is not None:
                    sb = with_writable(sb, value, f"{directive}={raw} changed {hit} on disk "
                                                  f"in trial {trial}: the directory as it is")
                done.append(Relaxation(trial, directive, raw, f"ReadWritePaths={full}",
                                       f"it changed {hit} on disk"))
    narrowed_files = [c for c in changes if c.path not in managed]
    if narrowed_files and sb.values("UMask") is not None:
        sb, r = relax_row(sb, "UMask", trial,
                          f"modes changed on disk: {narrowed_files[0].line()}")
        done += [r] if r else []
    return sb, done
