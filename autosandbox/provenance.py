"""Which host (or run) of a merge saw what: paths, families, capabilities, ...

`autosandbox merge` labels each profile (its file name, or --label) and records, per item of
the merged profile, the labels of the profiles that had it; `show` then says which host
contributed what, so a reviewer sees why the fleet's drop-in is wider than any one host's."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autosandbox.errors import UserError
from autosandbox.profile import Endpoint, Profile

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")


def _endpoints(eps: Iterable[Endpoint]) -> set[str]:
    return {f"{e.proto} {e.addr}:{e.port}" for e in eps}


# What one profile saw, by category: (name, the profile's keys in that category).
CATEGORIES: tuple[tuple[str, Callable[[Profile], set[str]]], ...] = (
    ("paths", lambda p: {*p.paths, *p.failed_paths,
                         *(d.rstrip("/") + "/*" for d in p.path_groups)}),
    ("execs", lambda p: set(p.execs)),
    ("families", lambda p: set(p.families)),
    ("capabilities", lambda p: set(p.capabilities)),
    ("flags", lambda p: set(p.flags)),
    ("binds", lambda p: _endpoints(p.binds)),
    ("peers", lambda p: _endpoints(p.peers)),
    ("unix_sockets", lambda p: set(p.unix_sockets)),
    ("syscalls", lambda p: set(p.syscalls)),
)
_NAMES = tuple(name for name, _ in CATEGORIES)


def check_label(label: str) -> str:
    if not _LABEL.fullmatch(label):
        raise UserError(f"bad label {label!r}: letters, digits and _.:@- only, at most 64, "
                        "starting with a letter or digit")
    return label


def default_label(path: Path, profile: Profile) -> str:
    """The host a profile names, else its file name without .json (and .profile)."""
    name = profile.subject.host or path.name
    for suffix in (".json", ".profile"):
        name = name.removesuffix(suffix)
    return name


@dataclass
class Provenance:
    hosts: list[str] = field(default_factory=list)
    seen: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # category -> key -> hosts

    def add(self, label: str, profile: Profile) -> None:
        """Record what `profile` saw as seen by `label`; a merged profile brings its own hosts
        (the label is then not used)."""
        if profile.provenance:
            other = Provenance.from_json(profile.provenance)
            self._add_hosts(other.hosts)
            for cat, keys in other.seen.items():
                mine = self.seen.setdefault(cat, {})
                for key, hosts in keys.items():
                    mine[key] = sorted({*mine.get(key, []), *hosts})
            return
        self._add_hosts([check_label(label)])
        for cat, keys_of in CATEGORIES:
            mine = self.seen.setdefault(cat, {})
            for key in keys_of(profile):
                mine[key] = sorted({*mine.get(key, []), label})

    def _add_hosts(self, hosts: list[str]) -> None:
        for h in hosts:
            if h in self.hosts:
                raise UserError(f"{h!r} is merged twice: give each profile its own --label")
            self.hosts.append(h)

    def to_json(self) -> dict[str, Any]:
        return {"hosts": list(self.hosts),
                "seen": {c: dict(sorted(self.seen.get(c, {}).items())) for c in _NAMES}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provenance:
        try:
            hosts = [check_label(str(h)) for h in data["hosts"]]
            seen = {str(c): {str(k): [str(h) for h in v] for k, v in keys.items()}
                    for c, keys in data.get("seen", {}).items()}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UserError(f"profile is malformed: provenance: {exc}") from None
        unknown = {h for keys in seen.values() for v in keys.values() for h in v} - set(hosts)
        if unknown:
            raise UserError(f"profile is malformed: provenance names unknown hosts "
                            f"{sorted(unknown)!r}")
        return cls(hosts, seen)


def merge_profiles(items: list[tuple[str, Profile]]) -> Profile:
    """The union of labelled profiles, with which label saw what."""
    prov = Provenance()
    merged: Profile | None = None
    for label, profile in items:
        prov.add(label, profile)
        if merged is None:
            merged = profile
            first = replace(profile.subject, merged=[])
            merged.subject = replace(first, merged=[first])
        else:
            merged.merge(profile)
    if merged is None:
        raise UserError("nothing to merge")
    merged.provenance = prov.to_json()
    return merged


def _shown(key: str) -> str:
    return key if key.isprintable() else repr(key)  # names come from the traced service


def describe(profile: Profile, host: str | None = None, limit: int = 30) -> list[str]:
    """Lines saying what only some hosts saw (and which), or what `host` saw beyond the rest."""
    if not profile.provenance:
        if host is not None:
            raise UserError("this profile has no provenance (it is not from `merge`)")
        return []
    prov = Provenance.from_json(profile.provenance)
    if host is not None and host not in prov.hosts:
        raise UserError(f"no host {host!r} in this profile (hosts: {', '.join(prov.hosts)})")
    n = len(prov.hosts)
    head = (f"seen on {host} but not on every host" if host else "seen on some hosts only")
    out = [f"{head} ({n} hosts: {', '.join(prov.hosts)}):"]
    for cat in _NAMES:
        rows = [(k, hs) for k, hs in sorted(prov.seen.get(cat, {}).items())
                if len(hs) < n and (host is None or host in hs)]
        if not rows:
            continue
        out.append(f"  {cat}:")
        out.extend(f"    {_shown(k)}: {', '.join(hs)}" for k, hs in rows[:limit])
        if len(rows) > limit:
            out.append(f"    ... {len(rows) - limit} more")
    if len(out) == 1:
        out.append("  nothing: every host saw the same")
    return out
