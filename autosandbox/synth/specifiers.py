"""A drop-in for every instance of a template, learned on one (`--template`): where a granted
path names the instance, the instance's name becomes the specifier systemd expands for each
instance (systemd.unit(5)): `%I` for the unescaped name ("site-a" -> "site/a", as a template
writes /srv/%I), else `%i`. Without this, a drop-in learned on NAME@a would grant every other
instance NAME@a's directories and none of its own.

Only whole path components are rewritten, and only in the values of directives that grant
paths (the catalogue's `<paths>`/`<names>` rows): a name that merely contains the instance
(/srv/site-a-old for "site-a") stays as learned.
"""

from __future__ import annotations

import re

from autosandbox.synth.catalogue import CATALOGUE
from autosandbox.synth.model import Sandbox, Setting

PATH_ROWS = frozenset(d.name for d in CATALOGUE if d.ladder[:1] in (("<paths>",), ("<names>",)))
_HEX = re.compile(r"\\x([0-9a-fA-F]{2})")
# Bounded by the start, a quote or a slash on each side: whole path components only.
_BEFORE, _AFTER = r'(?<![^/"])', r'(?![^/"])'
SPECIFIER = re.compile(_BEFORE + r"%[iI]" + _AFTER)  # as this module writes them


def unescape(instance: str) -> str:
    """systemd's %I: `-` is `/`, `\\xNN` the byte it escapes (unit_name_unescape)."""
    return _HEX.sub(lambda m: chr(int(m.group(1), 16)), instance.replace("-", "/"))


def _forms(instance: str) -> list[tuple[str, str]]:
    """(specifier, text it stands for, as written in a unit file), most specific first."""
    forms = [("%i", instance)]
    unescaped = unescape(instance)
    if unescaped != instance and unescaped.strip("/") == unescaped and "//" not in unescaped:
        forms.insert(0, ("%I", unescaped))
    return [(spec, text.replace("%", "%%")) for spec, text in forms]


def generalize_word(word: str, instance: str) -> str:
    """One rendered value word with the instance's name, where it is whole components,
    replaced by its specifier."""
    if not instance:
        return word
    for spec, text in _forms(instance):
        word = re.sub(_BEFORE + re.escape(text) + _AFTER, spec, word)
    return word


def for_every_instance(sb: Sandbox, instance: str) -> tuple[Sandbox, list[str]]:
    """The sandbox with instance paths written as specifiers, and the lines that changed
    (rendered as `Directive=value`), for the notes."""
    if not instance:
        return sb, []
    settings: list[Setting] = []
    changed: list[str] = []
    for s in sb.settings:
        if s.directive not in PATH_ROWS:
            settings.append(s)
            continue
        values = [generalize_word(v, instance) for v in s.values]
        if values == list(s.values):
            settings.append(s)
            continue
        changed += [f"{s.directive}={v}" for v, old in zip(values, s.values, strict=True)
                    if v != old]
        settings.append(Setting(s.directive, values,
                                f"{s.evidence} (learned on instance {instance}; written for "
                                "every instance)"))
    return (sb.with_settings(settings), changed) if changed else (sb, [])
