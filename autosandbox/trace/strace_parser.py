"""Streaming parser for `strace -f -y -q` output.

Only the syscalls that matter to a sandbox are split into arguments; every other line costs one
regular-expression match (the syscall set is all that is kept of it). `<unfinished ...>` halves
are joined per pid before parsing, so a call interrupted by another thread reads as one call.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# Frequent calls that matter only with certain arguments: parse them only when the line has the
# token (mmap runs thousands of times; only W+X mappings are interesting).
PREFILTER: dict[str, str] = {
    "mmap": "PROT_EXEC", "mprotect": "PROT_EXEC", "pkey_mprotect": "PROT_EXEC",
    "setsockopt": "SO", "fcntl": "F_SETLEASE", "prctl": "PR_CAPBSET_DROP",
    "recvfrom": "sa_family", "sendto": "sa_family", "sendmsg": "msg_name",
}

_HEAD = re.compile(r"(\d+) +(?:(\w+)\(|<\.\.\. (\w+) resumed>|(\+\+\+|---) )")
_TAIL = re.compile(r"\) += (-?\w+|\?)(<(?:[^<>\\]|\\.)*>)?(?: (E[A-Z0-9]+) \(.*\))?.*$")
_UNFINISHED = " <unfinished ...>"
_ERRNO = re.compile(r" = -1 (E[A-Z0-9]+) \(")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?|<(?:[^<>\\]|\\.)*>|[\[\]{}(),]')
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{2})|(.))", re.S)
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"v": b"\v", b"f": b"\f",
                   b"a": b"\a", b"b": b"\b", b"e": b"\x1b"}
_OPEN = "([{"
_CLOSE = ")]}"


@dataclass(slots=True)
class Syscall:
    """One completed system call. `args` are raw strace tokens; `ret` is the return value text."""

    pid: int
    name: str
    args: list[str]
    ret: str
    ret_deco: str | None  # the -y decoration on the return value, raw ("socket:[12]", "/etc/x")
    errno: str | None

    @property
    def ok(self) -> bool:
        return self.errno is None and self.ret != "?"

    @property
    def ret_path(self) -> str | None:
        """The path of a returned fd (`= 3</etc/passwd>`), decoded."""
        if self.ret_deco is None or not self.ret_deco.startswith("/"):
            return None
        return unescape(self.ret_deco.removesuffix(" (deleted)"))


@dataclass(slots=True)
class ProcessEnd:
    pid: int
    exit_code: int | None
    signal: str | None


@dataclass(slots=True)
class Signal:
    pid: int
    signal: str


Event = Syscall | ProcessEnd | Signal


def _unescape_match(m: re.Match[bytes]) -> bytes:
    if m.group(1) is not None:
        return bytes([int(m.group(1), 8) & 0xFF])
    if m.group(2) is not None:
        return bytes([int(m.group(2), 16)])
    ch = m.group(3)
    return _SIMPLE_ESCAPES.get(ch, ch)


def unescape(text: str) -> str:
    """Undo strace's C-style escaping; bytes that are not UTF-8 survive as surrogates."""
    if "\\" not in text:
        return text
    raw = _ESCAPE.sub(_unescape_match, os.fsencode(text))
    return os.fsdecode(raw)


def string_arg(token: str) -> str | None:
    """The value of a quoted string argument, or None if the token is not a complete string.

    A string that strace truncated (`"..."...`) is not a complete path, so it is refused.
    """
    if len(token) >= 2 and token[0] == '"' and token[-1] == '"':
        return unescape(token[1:-1])
    return None


def fd_path(token: str) -> str | None:
    """Path of an fd argument decorated by `-y` (`3</etc/passwd>`, `AT_FDCWD</root>`)."""
    lt = token.find("<")
    if lt < 0 or not token.endswith(">"):
        return None
    inner = token[lt + 1 : -1]
    if not inner.startswith("/"):  # socket:[..], pipe:[..], anon_inode:..
        return None
    return unescape(inner.removesuffix(" (deleted)"))


def split_args(text: str) -> list[str]:
    """Split an argument list at top-level commas, respecting strings, <...> and brackets."""
    args: list[str] = []
    depth = 0
    start = 0
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if len(tok) == 1:
            if tok in _OPEN:
                depth += 1
            elif tok in _CLOSE:
                depth -= 1
            elif tok == "," and depth == 0:
                args.append(text[start : m.start()].strip())
                start = m.end()
    last = text[start:].strip()
    if last or args:
        args.append(last)
    return args


def _split_call(body: str) -> tuple[str, str, str | None, str | None] | None:
    """Split `args) = ret...` into (args text, ret, ret decoration, errno)."""
    # Find the closing parenthesis of the call: the first top-level ')' followed by ' = '.
    depth = 0
    for m in _TOKEN.finditer(body):
        tok = m.group()
        if len(tok) != 1:
            continue
        if tok in _OPEN:
            depth += 1
        elif tok in _CLOSE:
            if depth == 0:
                tail = _TAIL.match(body, m.start())
                if tail is None:
                    return None
                deco = tail.group(2)
                return body[: m.start()], tail.group(1), deco, tail.group(3)
            depth -= 1
    return None


class StraceParser:
    """Turns lines of `strace -f` output into events; keeps per-pid unfinished halves."""

    def __init__(self, detailed: frozenset[str]) -> None:
        """`detailed`: the calls split into arguments (the recorder's READ_CALLS); every
        other one is only counted."""
        self.detailed = detailed
        self.counts: dict[str, int] = {}
        self.failed: dict[str, dict[str, int]] = {}  # undetailed calls that failed: name -> errno
        self.lines = 0
        self.unparsed = 0
        # A busy server repeats the same calls (same path, same fd numbers): splitting each
        # distinct text once makes the repeats cost a dictionary lookup.
        self._memo: dict[str, tuple[list[str], str, str | None, str | None] | None] = {}
        self._pending: dict[int, tuple[str, str]] = {}

    def feed(self, line: str) -> Event | None:
        self.lines += 1
        m = _HEAD.match(line)
        if m is None:
            self.unparsed += 1
            return None
        pid = int(m.group(1))
        name = m.group(2)
        if name is not None:
            counts = self.counts
            counts[name] = counts.get(name, 0) + 1
            if name not in self.detailed or (name in PREFILTER and PREFILTER[name] not in line):
                if " = -1 E" in line:
                    self._count_failure(name, line)
                return None
            body = line[m.end() :]
            if body.endswith(_UNFINISHED):
                self._pending[pid] = (name, body[: -len(_UNFINISHED)])
                return None
            return self._complete(pid, name, body)
        name = m.group(3)
        if name is not None:
            pending = self._pending.pop(pid, None)
            if pending is None or pending[0] != name:
                if " = -1 E" in line:
                    self._count_failure(name, line)
                return None
            rest = line[m.end() :]
            if rest.endswith(_UNFINISHED):  # resumed and interrupted again
                self._pending[pid] = (name, pending[1] + rest[: -len(_UNFINISHED)])
                return None
            return self._complete(pid, name, pending[1] + rest)
        return self._special(pid, m.group(4), line[m.end() :])

    def _count_failure(self, name: str, line: str) -> None:
        m = _ERRNO.search(line)
        if m is not None:
            errs = self.failed.setdefault(name, {})
            errs[m.group(1)] = errs.get(m.group(1), 0) + 1

    def _complete(self, pid: int, name: str, body: str) -> Syscall | None:
        key = name + "(" + body
        memo = self._memo
        if key in memo:
            hit = memo[key]
        else:
            parts = _split_call(body)
            if parts is None:
                hit = None
            else:
                args_text, ret, deco, errno = parts
                hit = (split_args(args_text), ret, deco[1:-1] if deco else None, errno)
            if len(memo) >= 8192:
                memo.clear()
            memo[key] = hit
        if hit is None:
            self.unparsed += 1
            return None
        # args are shared between repeats: the recorder only reads them
        return Syscall(pid, name, hit[0], hit[1], hit[2], hit[3])

    def _special(self, pid: int, kind: str, rest: str) -> Event | None:
        if kind == "+++":
            self._pending.pop(pid, None)
            text = rest.rstrip().removesuffix("+++").strip()
            if text.startswith("exited with "):
                return ProcessEnd(pid, int(text.split()[2]), None)
            if text.startswith("killed by "):
                return ProcessEnd(pid, None, text.split()[2])
            return None
        sig = rest.split(" ", 1)[0]
        return Signal(pid, sig)
