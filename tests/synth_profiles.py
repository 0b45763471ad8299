"""Hand-built profiles for synthesis tests: what a unit was seen to do, and the facts (owner,
mode, kind, symlink target) the tracer recorded when tracing ended. Paths need not exist on
this machine: synthesis must answer every file system question from the facts."""

from __future__ import annotations

import os
from collections.abc import Sequence

from autosandbox.profile import Endpoint, Fact, Profile, Subject
from autosandbox.synth.model import Sandbox
from autosandbox.synth.synthesize import synthesize
from autosandbox.synth.target import host_target
from autosandbox.systemd import analyze

ROOT_DIR = Fact("dir", 0, 0, 0o755)


def unit_profile(unit: str = "svc.service", uid: int | None = 0, gid: int | None = 0,
                 unit_lines: Sequence[str] = (), **subject: object) -> Profile:
    text = "\n".join(["[Unit]", "Description=test", "[Service]", "ExecStart=/bin/true",
                      *unit_lines]) + "\n"
    kept = {k: v for k, _, v in (line.partition("=") for line in unit_lines)}
    p = Profile(subject=Subject.from_json({"unit": unit, "uid": uid, "gid": gid,
                                           "unit_text": text, "kept": kept, **subject}))
    p.add_source("strace")
    p.syscalls.update({"read": 1, "write": 1, "openat": 1, "exit_group": 1})
    p.facts["/"] = ROOT_DIR
    return p


def link(p: Profile, path: str, target: str) -> None:
    p.facts[path] = Fact("link", 0, 0, 0o777, target)


def touch(p: Profile, path: str, *kinds: str, fact: Fact | None = None) -> None:
    """`path` accessed with `kinds`; its ancestors are root-owned directories unless the
    profile already says otherwise; `fact` is what it was when tracing ended."""
    for k in kinds:
        p.add_path(path, k)
    d = os.path.dirname(path)
    while os.path.dirname(d) != d:
        p.facts.setdefault(d, ROOT_DIR)
        d = os.path.dirname(d)
    if fact is not None:
        p.facts[path] = fact
    else:
        p.facts.setdefault(path, Fact("missing"))


def served(p: Profile, addr: str, port: int, proto: str = "tcp") -> None:
    fam = "AF_INET6" if ":" in addr else "AF_INET"
    p.add_family(fam)
    kind = "SOCK_STREAM" if proto == "tcp" else "SOCK_DGRAM"
    p.socket_types[f"{fam}/{kind}"] = 1
    p.binds.add(Endpoint(fam, proto, addr, port))


def synth(p: Profile, allow_write: Sequence[str] = (), ip_allow: Sequence[str] = ()) -> Sandbox:
    return synthesize(p, host_target(), keep=p.subject.kept, allow_write=allow_write,
                      ip_allow=ip_allow)


def verified(p: Profile, sb: Sandbox) -> str:
    """The drop-in, after systemd-analyze verify had nothing to say about it on the unit."""
    text = sb.render()
    unit = str(p.subject.unit_text)
    before = set(analyze.verify(unit, None))
    warnings = [w for w in analyze.verify(unit, text) if w not in before]
    assert warnings == [], f"systemd-analyze verify: {warnings}\n{text}"
    return text


def withheld_lines(sb: Sandbox) -> list[str]:
    return [w.line() for w in sb.withheld]
