"""Denials seen during a trial: the unit's journal since the trial began, and audit records
where auditd runs. Each denial names what broke as precisely as the source allows."""

from __future__ import annotations

import os
import re

from autosandbox.linux.audit import AuditEvent, SeccompKill
from autosandbox.synth.model import Denial

# errno texts as programs print them (strerror) and their numbers (nginx prints both)
_DENIED = re.compile(r"Read-only file system|Permission denied|Operation not permitted|"
                     r"Address family not supported|\(30[:)]|\(13[:)]|\[Errno (?:30|13|1|97)\]|"
                     r"EROFS|EACCES|EPERM|EAFNOSUPPORT", re.I)
# exim writes `/var/spool/exim4//msglog//ID`: a doubled slash is one (normalized below)
_PATH = re.compile(r"""["'`](/[^"'`\s]*)["'`]|(?<![\w/])(/(?:[\w.@+-]+/+)*[\w.@+-]+)""")
_KIND = (("erofs", re.compile(r"Read-only file system|\(30[:)]|Errno 30|EROFS", re.I)),
         ("eacces", re.compile(r"Permission denied|\(13[:)]|Errno 13|EACCES", re.I)),
         ("eafnosupport", re.compile(r"Address family not supported|Errno 97|EAFNOSUPPORT",
                                     re.I)),
         ("eperm", re.compile(r"Operation not permitted|Errno 1\]|EPERM", re.I)))
# The call a program's message names, where it is unambiguous (coreutils, procps, util-linux):
# `chown: changing ownership of 'X': ...`, `/bin/kill: (935): ...`, `kill: sending signal`.
_CALLS = (("chown", re.compile(r"changing (?:ownership|group) of|\bchown\(|\bchown: ", re.I)),
          ("chmod", re.compile(r"changing permissions of|\bchmod\b", re.I)),
          ("kill", re.compile(r"\bkill: \(\d+\)|\bkill: sending signal|\bkill\(", re.I)))


def audit_denials(events: list[AuditEvent], pids: set[int]) -> list[Denial]:
    out: list[Denial] = []
    seen: set[tuple[str, str | None, str]] = set()
    for ev in events:
        if ev.pid not in pids:
            continue
        kind = "eafnosupport" if ev.errno == "EAFNOSUPPORT" else ev.errno.lower()
        key = (kind, ev.path, ev.syscall)
        if key in seen:
            continue
        seen.add(key)
        text = f"{ev.syscall}() = {ev.errno}" + (f" on {ev.path}" if ev.path else "") + \
            (f" ({ev.family})" if ev.family else "") + f" by {ev.exe}"
        out.append(Denial(kind, ev.path, "audit", text, ev.syscall, ev.family, ev.uid))
    return out


def seccomp_denials(kills: list[SeccompKill], pids: set[int]) -> list[Denial]:
    """Calls the unit's filter killed it for: refused like an EPERM, but named by audit."""
    return [Denial("eperm", None, "seccomp",
                   f"{k.syscall}() killed by the system call filter ({k.exe})", k.syscall)
            for k in kills if k.pid in pids]


def _paths_nearest(line: str) -> list[str]:
    """The paths a line names, nearest the error text first: the object that was denied is
    next to it, a config file the line also cites is further away (haproxy: `Binding
    [/etc/haproxy/haproxy.cfg:5] ... (Permission denied) [/run/haproxy/admin.sock]`)."""
    err = _DENIED.search(line)
    lo, hi = err.span() if err else (0, 0)
    found = [(m.start(), m.end(), os.path.normpath(m.group(1) or m.group(2)))
             for m in _PATH.finditer(line)]
    found.sort(key=lambda f: lo - f[1] if f[1] <= lo else max(0, f[0] - hi))
    return [p for _, _, p in found]


def parse_denials(lines: list[str], source: str = "journal") -> list[Denial]:
    out: list[Denial] = []
    seen: set[tuple[str, str | None]] = set()
    for line in lines:
        if not _DENIED.search(line):
            continue
        kind = next((k for k, rx in _KIND if rx.search(line)), "eperm")
        call = next((c for c, rx in _CALLS if rx.search(line)), None)
        paths = [] if call == "kill" else _paths_nearest(line)  # kill: its own name only
        path = next((p for p in paths if not p.startswith(("/usr/lib/python", "/proc/self"))),
                    None)
        key = (kind, path)
        if key not in seen:
            seen.add(key)
            out.append(Denial(kind, path, source, line.strip()[:200], call))
    return out
