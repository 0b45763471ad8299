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
from collections.abc import Callable
from dataclasses import dataclass

from autosandbox import unitfile
from autosandbox.errors import UserError
from autosandbox.linux.capabilities import CAP_NAMES
from autosandbox.synth.catalogue import BY_NAME, COMPANIONS
from autosandbox.synth.model import Sandbox, Setting
from autosandbox.synth.rules import NS_NAMES
from autosandbox.synth.specifiers import PATH_ROWS, SPECIFIER
from autosandbox.synth.target import host_target

ALLOWED = frozenset({*BY_NAME, *COMPANIONS})
LISTS = frozenset({"ReadWritePaths", "ReadOnlyPaths", "StateDirectory", "CacheDirectory",
                   "LogsDirectory", "RuntimeDirectory", "DeviceAllow", "IPAddressAllow",
                   "SocketBindAllow", "SystemCallFilter", "RestrictAddressFamilies",
                   "CapabilityBoundingSet", "RestrictNamespaces"})
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


def _rw_path(w: str) -> bool:
    plain = unitfile.split_words(w)
    path = plain[0] if len(plain) == 1 else ""
    prefix = "-" if path.startswith("-") else ""
    return unitfile.path_value(path[len(prefix):], prefix) == w


def _dir_name(w: str) -> bool:
    plain = unitfile.split_words(w)
    return len(plain) == 1 and unitfile.name_value(plain[0]) == w


def _device_allow(words: list[str]) -> bool:
    plain = unitfile.split_words(words[0])
    return (len(words) == 2 and len(plain) == 1 and unitfile.path_value(plain[0]) == words[0]
            and plain[0].startswith("/dev/") and re.match(r"^[rwm]{1,3}$", words[1]) is not None)


def _ip_word(w: str) -> bool:
    if w in ("localhost", "link-local", "multicast"):
        return True
    try:
        ipaddress.ip_network(w, strict=False)
    except ValueError:
        return False
    return True


# How each list or companion directive is written: a test of each word (the first refused
# word is named), or of the whole value (the value is named). Other catalogue directives
# take a value of their ladder.
_EACH_WORD: dict[str, Callable[[str], bool]] = {
    "ReadWritePaths": _rw_path,
    "ReadOnlyPaths": _rw_path,
    **dict.fromkeys(("StateDirectory", "CacheDirectory", "LogsDirectory", "RuntimeDirectory"),
                    _dir_name),
    "CapabilityBoundingSet": lambda w: w in CAP_NAMES,
    "SystemCallFilter": lambda w: _SYSCALL_WORD.match(w) is not None,
    "IPAddressAllow": _ip_word,
    "SocketBindAllow": lambda w: _PORT.match(w) is not None,
}
_WHOLE_VALUE: dict[str, Callable[[list[str]], bool]] = {
    "DeviceAllow": _device_allow,
    "RestrictAddressFamilies": lambda ws: ws == ["none"] or all(_FAMILY.match(w) for w in ws),
    "SystemCallErrorNumber": lambda ws: len(ws) == 1 and _ERRNO.match(ws[0]) is not None,
    "RestrictNamespaces": lambda ws: ws == ["yes"] or all(w in _NAMESPACES for w in ws),
    # synthesis keeps a RuntimeDirectory= it adds
    "RuntimeDirectoryPreserve": lambda ws: ws == ["yes"],
}


def _refused(key: str, words: list[str]) -> str | None:
    """The word (or value) autosandbox would not have written for `key`, or None."""
    each = _EACH_WORD.get(key)
    if each is not None:
        return next((w for w in words if not each(w)), None)
    whole = _WHOLE_VALUE.get(key)
    value = " ".join(words)
    if whole is not None:
        return None if whole(words) else value
    d = BY_NAME.get(key)
    if d is not None and value in d.ladder and not value.startswith("<"):
        return None
    return value  # off the ladder, or a companion never written by autosandbox


def _check_value(key: str, words: list[str], what: str, instance: bool = False) -> None:
    """Each word exactly as autosandbox renders it for this directive, or refuse. For an
    instance of a template, a granted path may name the instance by its specifier, as whole
    components (synth/specifiers.py): elsewhere %i is empty and would widen the path."""
    if instance and key in PATH_ROWS:
        words = [SPECIFIER.sub("instance", w) for w in words]
    if not words:
        if key != "CapabilityBoundingSet":  # `X=` resets what the unit itself sets
            raise UserError(f"{what}: an empty {key}= would reset the unit's own setting")
        return
    bad = _refused(key, words)
    if bad is not None:
        raise UserError(f"{what}: {bad!r} is not a value autosandbox writes for {key}=")


def _clean(raw: str, where: str) -> str:
    """A line as systemd reads it, refusing what we never write."""
    if _CONTROL.search(raw) or "\r" in raw:
        raise UserError(f"{where}: control characters in the drop-in")
    line = raw.strip()
    if line.endswith("\\"):
        # systemd would join the next line to this one: text we would not have written
        raise UserError(f"{where}: a line continuation (trailing backslash)")
    return line


def _section(line: str, section: str, where: str) -> str:
    if line != "[Service]" or section:
        raise UserError(f"{where}: section {line[:40]!r}: autosandbox drop-ins hold "
                        "one [Service] section only")
    return line


def _setting(line: str, section: str, singles: set[str], comments: list[str],
             where: str, instance: bool = False) -> Setting:
    """One assignment, if it is a catalogue directive written as autosandbox writes it."""
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
    _check_value(key, words, f"{where} ({key}=)", instance)
    return Setting(key, words, " ".join(comments) or "from the candidate file")


def read_candidate(text: str, unit: str) -> Candidate:
    """Parse a drop-in the way systemd reads it and keep it only if autosandbox could have
    written it: one [Service] section, catalogue directives, comments."""
    target = host_target()
    settings: list[Setting] = []
    comments: list[str] = []
    header: list[str] = []
    section = ""
    singles: set[str] = set()
    for n, raw in enumerate(text.split("\n"), 1):  # systemd splits on newlines only
        where = f"line {n}"
        line = _clean(raw, where)
        if line and line[0] in "#;":
            comments.append(line.lstrip("#; "))
            if not section:
                header.append(line.lstrip("#; "))
            continue
        if not line:
            pass
        elif line.startswith("["):
            section = _section(line, section, where)
        else:
            settings.append(_setting(line, section, singles, comments, where,
                                     instance="@" in unit))
        comments = []
    if not settings:
        raise UserError("the drop-in sets nothing: expected a [Service] section of sandboxing "
                        "directives")
    cand = Candidate(Sandbox(unit, target, ["file"], tuple(settings)))
    m = _STATUS.search(" ".join(header) + " ")
    if m:
        cand.status, cand.status_unit = m.group(1), m.group(2)
    return cand


def parse_candidate(text: str, unit: str) -> Sandbox:
    return read_candidate(text, unit).sandbox
