"""The systemd a drop-in is written for: its version, build features and syscall groups."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from functools import cache

from autosandbox import commands
from autosandbox.errors import UserError

_VERSION = re.compile(r"^systemd (\d+)")


@dataclass(frozen=True)
class Target:
    version: int
    features: frozenset[str]  # "+BPF_FRAMEWORK" style names, without the sign, that are on
    groups: dict[str, frozenset[str]] = field(default_factory=dict, compare=False, hash=False)
    known_features: bool = True  # False when the version was given by hand
    # @system-service's direct members (groups and single calls), in systemd's order: read
    # with the groups, so synthesis never asks the host; unknown: the group as one piece
    service_parts: tuple[str, ...] = field(default=("@system-service",), compare=False)

    def has(self, feature: str) -> bool:
        return feature in self.features

    def describe(self) -> str:
        return f"systemd {self.version}" + ("" if self.known_features else " (features assumed)")


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise UserError(f"{argv[0]} is not installed: install systemd "
                        "(or pass --systemd-version for another host)")
    return commands.run(argv).stdout


def parse_version(text: str) -> tuple[int, frozenset[str]]:
    lines = text.splitlines()
    m = _VERSION.match(lines[0]) if lines else None
    if m is None:
        raise UserError(f"cannot read the systemd version from: {text[:80]!r}")
    feats = frozenset(w[1:] for line in lines[1:] for w in line.split() if w.startswith("+"))
    return int(m.group(1)), feats


def parse_syscall_groups(text: str) -> dict[str, frozenset[str]]:
    """Parse `systemd-analyze syscall-filter`; nested @groups are expanded."""
    raw = group_members(text)
    expanded: dict[str, frozenset[str]] = {}

    def expand(name: str, seen: frozenset[str]) -> frozenset[str]:
        if name in expanded:
            return expanded[name]
        out: set[str] = set()
        for item in raw.get(name, []):
            if item.startswith("@"):
                if item not in seen:
                    out |= expand(item, seen | {item})
            else:
                out.add(item)
        expanded[name] = frozenset(out)
        return expanded[name]

    for name in raw:
        expand(name, frozenset({name}))
    return expanded


def group_members(text: str) -> dict[str, tuple[str, ...]]:
    """Direct members of each group, nested @groups unexpanded (for @system-service parts)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = out.setdefault(line.strip(), [])
        elif line.startswith(" ") and current is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                current.append(item)
    return {k: tuple(v) for k, v in out.items()}


@cache
def _syscall_filter_text() -> str:
    return _run(["systemd-analyze", "syscall-filter"])


def _parts(text: str) -> tuple[str, ...]:
    return group_members(text).get("@system-service", ()) or ("@system-service",)


@cache
def host_target() -> Target:
    version, feats = parse_version(_run(["systemctl", "--version"]))
    text = _syscall_filter_text()
    return Target(version, feats, parse_syscall_groups(text), service_parts=_parts(text))


def target_for(version: int | None, bpf: bool | None = None) -> Target:
    """The host's systemd, or one given by version (features assumed from a default build)."""
    if version is None:
        t = host_target()
        if bpf is None:
            return t
        feats = t.features | {"BPF_FRAMEWORK"} if bpf else t.features - {"BPF_FRAMEWORK"}
        return Target(t.version, feats, t.groups, service_parts=t.service_parts)
    try:
        text = _syscall_filter_text()
    except UserError:
        text = ""
    base = {"SECCOMP", "AUDIT", "APPARMOR", "SELINUX"}
    if bpf is None or bpf:
        base.add("BPF_FRAMEWORK")
    return Target(version, frozenset(base), parse_syscall_groups(text), known_features=False,
                  service_parts=_parts(text))
