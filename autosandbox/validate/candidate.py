"""Read a drop-in back as a candidate, accepting only what autosandbox writes.

`validate` and `apply` install a file that runs with the unit's privileges: a `[Unit]` section,
an `ExecStartPre=`, `User=root` or `Environment=` in it would run or change anything. So the
file must be one `[Service]` section of the catalogue's sandboxing directives and comments,
each value exactly as autosandbox renders it (quoting and `%` escaping included). Anything
else is refused with one line, before anything is installed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from autosandbox import unitfile
from autosandbox.errors import UserError
from autosandbox.synth.catalogue import BY_NAME, COMPANIONS
from autosandbox.synth.rules import NS_NAMES, Setting
from autosandbox.synth.synthesize import Sandbox
from autosandbox.synth.target import host_target
from autosandbox.trace.capabilities import CAP_NAMES

ALLOWED = frozenset({*BY_NAME, *COMPANIONS})
LISTS = frozenset({"ReadWritePaths", "StateDirectory", "CacheDirectory", "LogsDirectory",
                   "RuntimeDirectory", "DeviceAllow", "IPAddressAllow", "SocketBindAllow",
                   "SystemCallFilter", "RestrictAddressFamilies", "CapabilityBoundingSet",
                   "RestrictNamespaces"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_RAW_WORD = re.compile(r'"[^"]*"|\'[^\']*\'|[^\s"\']+')
_RAW_VALUE = re.compile(r'^(?:(?:"[^"]*"|\'[^\']*\'|[^\s"\']+)(?:\s+|$))*$')
_STATUS = re.compile(r"autosandbox: (validated|NOT validated) on (\S+?\.service)\b")
_SYSCALL_WORD = re.compile(r"^(?:@[a-z0-9-]+|[a-z0-9_]+)$")
_FAMILY = re.compile(r"^AF_[A-Z0-9]+$")
_ERRNO = re.compile(r"^E[A-Z0-9]+$")
_PORT = re.compile(r"^(?:(?:ipv4|ipv6):)?(?:tcp|udp):\d{1,5}(?:-\d{1,5})?$")
_NAMESPACES = frozenset(NS_NAMES.values())


@dataclass
class Candidate:
    sandbox: Sandbox
    status: str | None = None  # "validated" or "NOT validated", from our status comment
    status_unit: str | None = None  # the unit that status was established on


def _raw_words(value: str, what: str) -> list[str]:
    """The words of a value as written (quotes kept), refusing what does not split cleanly."""
    if not _RAW_VALUE.match(value):
        raise UserError(f"{what}: the value does not parse (unbalanced quotes)")
    return list(_RAW_WORD.findall(value))


def _check_value(key: str, words: list[str], what: str) -> None:
    """Each word exactly as autosandbox renders it for this directive, or refuse."""
    d = BY_NAME.get(key)
    def bad(word: str) -> UserError:
        return UserError(f"{what}: {word!r} is not a value autosandbox writes for {key}=")

    if not words:
        if key != "CapabilityBoundingSet":  # `X=` resets what the unit itself sets
            raise UserError(f"{what}: an empty {key}= would reset the unit's own setting")
        return
    if key == "ReadWritePaths":
        for w in words:
            plain = unitfile.split_words(w)
            path = plain[0] if len(plain) == 1 else ""
            prefix = "-" if path.startswith("-") else ""
            if unitfile.path_value(path[len(prefix):], prefix) != w:
                raise bad(w)
    elif key in ("StateDirectory", "CacheDirectory", "LogsDirectory", "RuntimeDirectory"):
        for w in words:
            plain = unitfile.split_words(w)
            if len(plain) != 1 or unitfile.name_value(plain[0]) != w:
                raise bad(w)
    elif key == "DeviceAllow":
        plain = unitfile.split_words(words[0])
        if len(words) != 2 or len(plain) != 1 or unitfile.path_value(plain[0]) != words[0] \
                or not plain[0].startswith("/dev/") or not re.match(r"^[rwm]{1,3}$", words[1]):
            raise bad(" ".join(words))
    elif key == "CapabilityBoundingSet":
        for w in words:
            if w not in CAP_NAMES:
                raise bad(w)
    elif key == "RestrictAddressFamilies":
        if words != ["none"] and not all(_FAMILY.match(w) for w in words):
            raise bad(" ".join(words))
    elif key == "SystemCallFilter":
        for w in words:
            if not _SYSCALL_WORD.match(w):
                raise bad(w)
    elif key == "SystemCallErrorNumber":
        if len(words) != 1 or not _ERRNO.match(words[0]):
            raise bad(" ".join(words))
    elif key == "RestrictNamespaces":
        if words != ["yes"] and not all(w in _NAMESPACES for w in words):
            raise bad(" ".join(words))
    elif key == "IPAddressAllow":
        for w in words:
            if w in ("localhost", "link-local", "multicast"):
                continue
            try:
                ipaddress.ip_network(w, strict=False)
            except ValueError:
                raise bad(w) from None
    elif key == "RuntimeDirectoryPreserve":  # synthesis keeps a RuntimeDirectory= it adds
        if words != ["yes"]:
            raise bad(" ".join(words))
    elif key == "SocketBindAllow":
        for w in words:
            if not _PORT.match(w):
                raise bad(w)
    elif d is not None:
        value = " ".join(words)
        if value not in d.ladder or value.startswith("<"):
            raise bad(value)
    else:  # a companion not handled above: never written by autosandbox
        raise bad(" ".join(words))


def read_candidate(text: str, unit: str) -> Candidate:
    """Parse a drop-in the way systemd reads it and keep it only if autosandbox could have
    written it: one [Service] section, catalogue directives, comments."""
    sb = Sandbox(unit, host_target(), ["file"])
    cand = Candidate(sb)
    comments: list[str] = []
    header: list[str] = []
    section = ""
    singles: set[str] = set()
    for n, raw in enumerate(text.split("\n"), 1):  # systemd splits on newlines only
        where = f"line {n}"
        if _CONTROL.search(raw) or "\r" in raw:
            raise UserError(f"{where}: control characters in the drop-in")
        line = raw.strip()
        if line.endswith("\\"):
            # systemd would join the next line to this one: text we would not have written
            raise UserError(f"{where}: a line continuation (trailing backslash)")
        if not line:
            comments = []
            continue
        if line[0] in "#;":
            comments.append(line.lstrip("#; "))
            if not section:
                header.append(line.lstrip("#; "))
            continue
        if line.startswith("["):
            if line != "[Service]" or section:
                raise UserError(f"{where}: section {line[:40]!r}: autosandbox drop-ins hold "
                                "one [Service] section only")
            section = line
            comments = []
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z]+$", key):
            raise UserError(f"{where}: {line[:60]!r} is not an assignment")
        if not section:
            raise UserError(f"{where}: {key}= outside [Service]")
        if key not in ALLOWED:
            raise UserError(f"{where}: {key}= is not a sandboxing directive autosandbox writes; "
                            "refusing the drop-in")
        if key not in LISTS and key != "DeviceAllow":
            if key in singles:
                raise UserError(f"{where}: {key}= is set twice")
            singles.add(key)
        words = _raw_words(value.strip(), f"{where} ({key}=)")
        _check_value(key, words, f"{where} ({key}=)")
        sb.settings.append(Setting(key, words, " ".join(comments) or "from the candidate file"))
        comments = []
    if not sb.settings:
        raise UserError("the drop-in sets nothing: expected a [Service] section of sandboxing "
                        "directives")
    m = _STATUS.search(" ".join(header) + " ")
    if m:
        cand.status, cand.status_unit = m.group(1), m.group(2)
    return cand


def parse_candidate(text: str, unit: str) -> Sandbox:
    return read_candidate(text, unit).sandbox
