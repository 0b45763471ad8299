"""From written paths to the fewest writable locations, by rules that can be explained.

1. A file the service only wrote to (never created, removed or renamed) and that exists stays
   writable by itself.
2. Files created, removed or renamed need their directory writable (a bind mount cannot make a
   missing file writable, and atomic renames replace the directory entry); a directory the
   service made itself counts as its own, so the topmost such directory is used.
3. /var/lib/NAME, /var/cache/NAME, /var/log/NAME and /run/NAME become StateDirectory=,
   CacheDirectory=, LogsDirectory= and RuntimeDirectory= when NAME is the service's own name.
4. /tmp and /var/tmp stay private (PrivateTmp=) unless the service read files there it did
   not create, or talked to sockets there: then /tmp is shared and the writes are listed.
5. Entries below another entry are dropped. Nothing is generalized further than that.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from autosandbox.profile import Profile

API_FS = ("/dev/", "/proc/", "/sys/")
TMP_DIRS = ("/tmp", "/var/tmp")
HOME_DIRS = ("/home", "/root", "/run/user")
MANAGED = (("/var/lib/", "StateDirectory"), ("/var/cache/", "CacheDirectory"),
           ("/var/log/", "LogsDirectory"), ("/run/", "RuntimeDirectory"))
BROAD = frozenset({"/", "/etc", "/usr", "/var", "/var/lib", "/var/log", "/var/cache", "/run",
                   "/opt", "/srv", "/boot", "/home", "/root", "/tmp", "/var/tmp", "/mnt",
                   "/media"})
_CREATION = frozenset({"create", "delete", "rename", "mkdir"})


def under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


@dataclass
class Anchor:
    path: str
    why: str
    examples: list[str] = field(default_factory=list)
    count: int = 0
    missing_ok: bool = False

    @property
    def broad(self) -> bool:
        return self.path in BROAD

    def evidence(self) -> str:
        more = f" (+{self.count - len(self.examples)} more)" if self.count > len(
            self.examples) else ""
        return f"{self.why}: {', '.join(self.examples)}{more}"


@dataclass
class WritePlan:
    anchors: dict[str, Anchor] = field(default_factory=dict)  # path -> ReadWritePaths entry
    managed: dict[str, dict[str, Anchor]] = field(default_factory=dict)  # directive -> name
    tmp_writes: list[str] = field(default_factory=list)
    tmp_shared: list[str] = field(default_factory=list)  # evidence that /tmp is shared
    home_writes: list[str] = field(default_factory=list)


def _add(anchors: dict[str, Anchor], path: str, why: str, example: str,
         missing_ok: bool = False) -> None:
    a = anchors.get(path)
    if a is None:
        a = anchors[path] = Anchor(path, why, missing_ok=missing_ok)
    a.count += 1
    if example not in a.examples and len(a.examples) < 3:
        a.examples.append(example)


def is_own(name: str, service: str | None) -> bool:
    """Whether a directory NAME is the service's own: named after it (`nginx`, `nginx-cache`)."""
    if not service:
        return False
    first = name.split("/", 1)[0]
    return first == service or first.startswith((service + "-", service + ".", service + "_"))


def plan_writes(profile: Profile, service: str | None,
                exists: Callable[[str], bool] = os.path.lexists) -> WritePlan:
    plan = WritePlan()
    written = profile.written_paths()
    made_dirs = {p for p, kinds in written.items() if "mkdir" in kinds}
    created = {p for p, kinds in written.items() if kinds & {"create", "mkdir"}}

    for path, kinds in sorted(written.items()):
        if path.startswith(API_FS) or path in ("/dev", "/proc", "/sys"):
            continue
        if any(under(path, t) for t in TMP_DIRS):
            plan.tmp_writes.append(path)
        if any(under(path, h) for h in HOME_DIRS):
            plan.home_writes.append(path)
        anchor, why = _anchor_for(path, kinds, made_dirs, exists)
        _add(plan.anchors, anchor, why, path)

    # Rule 4: /tmp shared with others?
    for path in profile.paths:
        if (any(under(path, t) for t in TMP_DIRS) and path not in TMP_DIRS
                and "read" in profile.paths[path] and path not in created
                and not os.path.isdir(path)):
            plan.tmp_shared.append(f"read {path}")
    for sock in profile.unix_sockets:
        if any(under(sock, t) for t in TMP_DIRS):
            plan.tmp_shared.append(f"socket {sock}")
    if not plan.tmp_shared:
        for a in list(plan.anchors):
            if any(under(a, t) for t in TMP_DIRS):
                del plan.anchors[a]

    # Rule 3: the service's own directories under /var/lib, /var/cache, /var/log, /run.
    for a in sorted(plan.anchors):
        for base, directive in MANAGED:
            if a.startswith(base) and a != base.rstrip("/"):
                name = a[len(base):].split("/", 1)[0]
                if is_own(name, service):
                    moved = plan.anchors.pop(a)
                    target = plan.managed.setdefault(directive, {})
                    m = target.setdefault(name, Anchor(base + name, "written below"))
                    m.count += moved.count
                    for ex in moved.examples:
                        if ex not in m.examples and len(m.examples) < 3:
                            m.examples.append(ex)
                break

    # Rule 5: drop entries covered by another entry or by a managed directory.
    covering = [*plan.anchors, *(m.path for d in plan.managed.values() for m in d.values())]
    for a in sorted(plan.anchors, key=len, reverse=True):
        if any(c != a and under(a, c) for c in covering):
            outer = next(c for c in sorted(covering, key=len) if c != a and under(a, c))
            if outer in plan.anchors:
                inner = plan.anchors[a]
                plan.anchors[outer].count += inner.count
            del plan.anchors[a]
            covering = [c for c in covering if c != a]
    return plan


def _anchor_for(path: str, kinds: set[str], made_dirs: set[str],
                exists: Callable[[str], bool]) -> tuple[str, str]:
    if not kinds & _CREATION:
        if exists(path):
            return path, "written"
        return os.path.dirname(path) or "/", "written, since removed"
    if "mkdir" in kinds and not kinds & {"delete", "rename"} and exists(path):
        start = path
    else:
        start = os.path.dirname(path) or "/"
    # Climb through directories the service made itself (rule 2) to the topmost that exists.
    top = start
    while os.path.dirname(top) in made_dirs and exists(os.path.dirname(top)):
        top = os.path.dirname(top)
    while not exists(top) and top != "/":
        top = os.path.dirname(top) or "/"
    return top, "files created/removed/renamed in it"
