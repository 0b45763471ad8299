"""The one place that writes systemd syntax: quoting, specifier escaping, safe comments.

A traced program chooses its file names, so nothing it names may reach a unit file raw: a
newline would start a new directive, a `%` would expand a specifier, a quote or backslash
would change how systemd splits the value. Values are built from validated words only; paths
that cannot be written safely are refused (None) and the caller says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

PATH_MAX = 4096
# Characters systemd splits or unquotes on, or that change meaning at the start of a line.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"'\\]")
_NEEDS_QUOTES = re.compile(r"[\s;#]")
_COMMENT_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")
_WORD = re.compile(r"^[A-Za-z0-9_@:.,/+=~-]+$")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file name
        return False
    return True


def path_value(path: str, prefix: str = "") -> str | None:
    """One path word for ReadWritePaths=/DeviceAllow=-style lists, or None if unsafe.

    `prefix` is systemd's `-` (ignore if missing) and goes inside the quotes, where systemd
    looks for it after unquoting.
    """
    if (not path.startswith("/") or len(path) >= PATH_MAX or _UNSAFE.search(path)
            or not _is_utf8(path) or "\u2028" in path or "\u2029" in path):
        return None
    word = (prefix + path).replace("%", "%%")
    if _NEEDS_QUOTES.search(word) or any(not ch.isprintable() for ch in word):
        return f'"{word}"'
    return word


def name_value(name: str) -> str | None:
    """A relative directory name (StateDirectory=...), or None if unsafe."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        return None
    value = path_value("/" + name)
    if value is None:
        return None
    return value.replace("/", "", 1) if not value.startswith('"') else '"' + value[2:]


def word(text: str) -> str:
    """A word from a closed vocabulary (capability, family, syscall, address). Refuses others."""
    if not _WORD.match(text):
        raise ValueError(f"refusing to write {text!r} into a unit file")
    return text.replace("%", "%%")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters of a quoted line (a journal line as evidence), cut at a
    word's end and marked, never mid-word ("not readable by root wi")."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 3]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "..."


def comment(text: str, width: int = 100) -> list[str]:
    """Comment lines that can never become anything but comments.

    Control characters and backslashes (a trailing one would continue the line) are shown
    as \\xNN escapes.
    """
    safe = _COMMENT_UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    safe = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in safe)
    safe = safe.encode("utf-8", "backslashreplace").decode("utf-8")
    out: list[str] = []
    line = ""
    for w in safe.split(" "):
        if line and len(line) + 1 + len(w) > width - 2:
            out.append("# " + line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line or not out:
        out.append("# " + line)
    return out


def assignment(key: str, values: Sequence[str]) -> str:
    if not re.match(r"^[A-Za-z]+$", key):
        raise ValueError(f"bad directive name {key!r}")
    return f"{key}={' '.join(values)}"


# -- parsing back (used by tests and by `diff`): systemd's own rules, for what we write --------
def parse(text: str) -> list[tuple[str, str]]:
    """(key, raw value) assignments of a unit file or drop-in, sections ignored."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;" or line.startswith("[")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        key, sep, value = line.partition("=")
        if sep:
            out.append((key.strip(), value.strip()))
    return out


def split_words(value: str) -> list[str]:
    """Split a list value the way systemd's extract_first_word(UNQUOTE|RETAIN_ESCAPE) does for
    path lists, then undo `%%`."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    in_word = False
    for ch in value:
        if quote:
            if ch == quote:
                quote = ""
            else:
                cur.append(ch)
        elif ch in "\"'":
            quote = ch
            in_word = True
        elif ch.isspace():
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(ch)
            in_word = True
    if in_word:
        words.append("".join(cur))
    return [w.replace("%%", "%") for w in words]


def values_of(text: str, key: str) -> list[str]:
    """All words assigned to `key` (an empty assignment resets the list, as in systemd)."""
    out: list[str] = []
    for k, v in parse(text):
        if k == key:
            out = [] if not v else [*out, *split_words(v)]
    return out


def join_lines(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"


def exec_arg(arg: str, expand_env: bool = False) -> str:
    """One ExecStart= word: C-escaped inside double quotes; `%` doubled, and `$` too unless
    the word comes from systemd itself (`expand_env`: it still holds the unit's own `$VAR`
    references, which systemd expands at exec time as it did before)."""
    out = []
    for ch in arg:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and not expand_env:
            out.append("$$")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or not ch.isprintable():
            for b in ch.encode("utf-8", "surrogateescape"):
                out.append(f"\\x{b:02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def exec_line(argv: Sequence[str], expand_env: bool = False) -> str:
    return " ".join(exec_arg(a, expand_env) for a in argv)
