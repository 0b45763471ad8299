"""What synthesis may know about the file system: the profile's facts, never the host.

A profile records, when tracing ended, what lstat said about the paths it saw (`facts`), so a
drop-in is a pure function of the profile and can be written later or for another host. Older
profiles have no facts: then, and only then, the host is asked, as it was when they were made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from autosandbox.linux.files import read_regular
from autosandbox.linux.mounts import volatile
from autosandbox.profile import Fact, Profile
from autosandbox.synth.sensitive import canonical


def host_fact(path: str) -> Fact:
    """What lstat says about `path` on this host now (for profiles without facts)."""
    return Fact.of_host(path)


def _norm(path: str) -> str:
    """normpath, and one leading slash (POSIX keeps `//`, the kernel does not care)."""
    return "/" + os.path.normpath(path).lstrip("/")


@dataclass
class FileView:
    facts: dict[str, Fact] | None  # None: the profile has none, ask the host
    execs: dict[str, dict[str, bool]] = field(default_factory=dict)
    rotated: dict[str, str] = field(default_factory=dict)  # file -> logrotate config
    mounts: dict[str, str] = field(default_factory=dict)  # mount point -> type, at trace time
    _cache: dict[str, Fact] = field(default_factory=dict)

    @classmethod
    def of(cls, profile: Profile) -> FileView:
        view = cls(dict(profile.facts) if profile.facts else None, profile.execs,
                   dict(profile.rotated), dict(profile.mounts))
        if view.facts is not None:
            # lstat of /var/run/x followed /var/run: its fact is that of /run/x too, which is
            # the name synthesis asks for once paths are resolved.
            extra: dict[str, Fact] = {}
            for path, f in view.facts.items():
                parent, base = os.path.split(path)
                real = os.path.join(view.resolve(parent), base) if base else path
                if real != path and real not in view.facts:
                    extra.setdefault(real, f)
            view.facts.update(extra)
        return view

    def rotated_by(self, path: str) -> str | None:
        """The logrotate configuration that renames `path` (or the file it was written as)."""
        return self.rotated.get(path) or next(
            (c for f, c in self.rotated.items() if self.resolve(f) == path), None)

    def volatile(self, path: str) -> bool:
        """Whether `path` is on a file system emptied at every boot, by the mounts recorded at
        trace time (linux/mounts.py)."""
        return volatile(self.resolve(path), self.mounts)

    @property
    def from_host(self) -> bool:
        return self.facts is None

    def fact(self, path: str) -> Fact | None:
        """What is known of `path` (None: nothing recorded)."""
        if self.facts is not None:
            return self.facts.get(path)
        if path not in self._cache:
            self._cache[path] = host_fact(path)
        return self._cache[path]

    def exists(self, path: str) -> bool:
        f = self.fact(path)
        return f is not None and f.kind != "missing"

    def kind(self, path: str) -> str | None:
        """The kind of what `path` names, through a symlink; None if unknown or missing."""
        f = self.fact(self.resolve(path))
        return f.kind if f is not None and f.kind != "missing" else None

    def resolve(self, path: str) -> str:
        """`path` with every symlinked component replaced by its target (as the kernel and
        systemd follow them): the well-known aliases first (/var/run -> /run), then each
        ancestor and the path itself whose fact is a link with a recorded target."""
        path = canonical(_norm(path))
        for _ in range(40):  # the kernel's own limit on nested links
            changed = False
            parts = path.split("/")
            for i in range(2, len(parts) + 1):
                prefix = "/".join(parts[:i])
                f = self.fact(prefix)
                if f is not None and f.kind == "link" and f.target and f.target != prefix:
                    rest = "/".join(parts[i:])
                    path = canonical(_norm(f.target + ("/" + rest if rest else "")))
                    changed = True
                    break
            if not changed:
                return path
        return path

    def elf_class(self, path: str) -> int | None:
        """1 for a 32-bit ELF binary, 2 for 64-bit, None if unknown."""
        bits = self.execs.get(path, {})
        if "elf32" in bits:
            return 1 if bits["elf32"] else 2
        if self.facts is not None:
            return None
        head = read_regular(path, 5) or b""
        return head[4] if head[:4] == b"\x7fELF" and len(head) == 5 else None
