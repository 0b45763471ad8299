"""What synthesis knows of the traced unit (or command): identity, instance, own directories,
derived from the profile's Subject (what tracing recorded)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from autosandbox import unitfile
from autosandbox.profile import Profile

# systemd's exec directories: directive -> the base it names directories under.
EXEC_DIRS: dict[str, str] = {"StateDirectory": "/var/lib", "CacheDirectory": "/var/cache",
                             "LogsDirectory": "/var/log", "RuntimeDirectory": "/run"}
_SPECIFIER = re.compile(r"%(.)")


@dataclass
class SubjectView:
    unit: str | None
    service: str | None  # the name a service's own directories carry
    uid: int | None  # whom the service runs as (None: unknown, e.g. a plain command)
    gid: int | None
    dynamic_user: bool = False
    instance: str | None = None  # a template instance's %i
    declared: dict[str, list[str]] = field(default_factory=dict)  # base dir -> names
    settings: dict[str, str] = field(default_factory=dict)  # the unit's own (last value wins)
    user_manager: bool = False  # a unit of a user's manager (systemd --user), not the system's
    home: str | None = None  # that user's home: its own place (sensitive.withheld)

    @property
    def is_instance(self) -> bool:
        return self.instance is not None

    def declared_paths(self) -> list[tuple[str, str]]:
        """(absolute directory, directive) for every exec directory the unit itself declares;
        with DynamicUser= systemd keeps them below /var/lib/private (and friends)."""
        out = []
        for directive, base in EXEC_DIRS.items():
            for name in self.declared.get(directive, []):
                out.append((f"{base}/{name}", directive))
                if self.dynamic_user and directive != "RuntimeDirectory":
                    out.append((f"{base}/private/{name}", directive))
        return out


def _expand(value: str, unit: str) -> str | None:
    """The unit name specifiers of an exec directory name; None for any other specifier."""
    stem = unit.rsplit(".", 1)[0]
    prefix, _, instance = stem.partition("@")
    table = {"i": instance, "I": instance, "n": unit, "N": stem, "p": prefix, "P": prefix,
             "%": "%"}
    bad = [m.group(1) for m in _SPECIFIER.finditer(value) if m.group(1) not in table]
    if bad:
        return None
    return _SPECIFIER.sub(lambda m: table[m.group(1)], value)


def subject_of(profile: Profile) -> SubjectView:
    s = profile.subject
    unit = s.unit or None
    service: str | None = None
    instance: str | None = None
    if unit:
        stem = unit.removesuffix(".service")
        service, at, inst = stem.partition("@")
        instance = inst if at else None
    elif s.command:
        service = os.path.basename(s.command[0])
    settings = dict(s.kept or {})
    dynamic = s.dynamic_user or settings.get("DynamicUser", "").lower() in (
        "yes", "true", "on", "1")
    declared: dict[str, list[str]] = {}
    if s.unit_text is not None and unit:
        for directive in EXEC_DIRS:
            for word in unitfile.values_of(s.unit_text, directive):
                name = _expand(word.split(":", 1)[0], unit)
                if name and not name.startswith("/") and ".." not in name.split("/"):
                    declared.setdefault(directive, []).append(name.strip("/"))
    user_manager = s.manager == "user"
    return SubjectView(unit, service, s.uid, s.gid, dynamic, instance, declared, settings,
                       user_manager=user_manager,
                       home=s.manager_home if user_manager else None)
