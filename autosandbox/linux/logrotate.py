"""Which files logrotate renames when it rotates them, read from its configuration.

A file made writable by itself (ReadWritePaths=/var/log/app.log) is a bind mount of that file:
when logrotate renames it and creates a new one, the service's mount namespace keeps the
rotated file writable and the new one read-only (vsftpd then refused every login with
"failed to open vsftpd log file", rsyslog's syslog stopped). A rotation by `copytruncate`
keeps the file and is harmless. Read at trace time: a fact of the host, like owners and modes.
"""

from __future__ import annotations

import glob
import os
import shlex
from collections.abc import Iterable
from pathlib import Path

CONF = Path("/etc/logrotate.conf")
# What logrotate itself skips in an included directory (its default tabooext list)
_TABOO = (".rpmsave", ".rpmorig", "~", ",v", ".disabled", ".dpkg-old", ".dpkg-dist",
          ".dpkg-new", ".cfsaved", ".ucf-old", ".ucf-dist", ".ucf-new", ".rpmnew", ".swp")
# Script sections: their lines are shell, not directives
_SCRIPTS = ("postrotate", "prerotate", "firstaction", "lastaction", "preremove")
MAX_FILES = 256  # included configuration files read at most (a loop of includes ends)


def rotated_files(conf: Path = CONF) -> dict[str, str]:
    """Every existing file whose rotation renames it -> the configuration file that says so
    (the real path of each file a pattern matches now, as logrotate would find it)."""
    parser = _Parser()
    parser.read(conf)
    return parser.out


class _Parser:
    def __init__(self) -> None:
        self.out: dict[str, str] = {}
        self.seen: set[Path] = set()
        self.copytruncate = False  # the global default, as the files read so far leave it

    def read(self, conf: Path) -> None:
        if conf in self.seen or len(self.seen) >= MAX_FILES:
            return
        self.seen.add(conf)
        try:
            lines = conf.read_text(errors="replace").splitlines()
        except OSError:
            return
        patterns: list[str] = []
        it = iter(lines)
        for raw in it:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if "{" in line:
                self._block(conf, [*patterns, *_words(line.split("{", 1)[0])],
                            [] if line.endswith("}") else it)
                patterns = []
            elif line.split()[0] == "include" and len(line.split()) > 1:
                self._include(Path(line.split(None, 1)[1].strip()))
            elif line.split()[0] in ("copytruncate", "nocopytruncate"):
                self.copytruncate = line.split()[0] == "copytruncate"
            elif line.startswith(("/", '"', "'")):
                patterns += _words(line)  # a block's patterns may span lines before its "{"

    def _block(self, conf: Path, patterns: list[str], body: Iterable[str]) -> None:
        """A block's directives up to its "}": does it rotate by copying?"""
        copy = self.copytruncate
        script = False
        for raw in body:
            word = (raw.split() or [""])[0]
            if script:
                script = word != "endscript"
            elif raw.strip().startswith("}"):
                break
            elif word in _SCRIPTS:
                script = True
            elif word in ("copytruncate", "nocopytruncate"):
                copy = word == "copytruncate"
        if not copy:
            _add(patterns, conf, self.out)

    def _include(self, target: Path) -> None:
        if target.is_dir():
            for f in sorted(target.iterdir()):
                if f.is_file() and not f.name.startswith(".") and not f.name.endswith(_TABOO):
                    self.read(f)
        else:
            self.read(target)


def _words(text: str) -> list[str]:
    try:
        return [w for w in shlex.split(text) if w.startswith("/")]
    except ValueError:  # an unbalanced quote: not a pattern list logrotate would accept
        return []


def _add(patterns: list[str], conf: Path, out: dict[str, str]) -> None:
    for pattern in patterns:
        for match in glob.glob(pattern):
            real = os.path.realpath(match)
            if os.path.isfile(real):
                out.setdefault(real, str(conf))
