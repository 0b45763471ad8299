"""What the human reads: progress while learning, profile summaries, results. No decisions."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Protocol, TextIO

from autosandbox.durations import format_duration
from autosandbox.profile import Profile


class Progress(Protocol):
    """What a tracer reports while it learns (trace/command.py's Progress): read only."""

    @property
    def elapsed(self) -> float: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def events(self) -> int: ...
    @property
    def paths(self) -> int: ...
    @property
    def families(self) -> Sequence[str]: ...
    @property
    def capabilities(self) -> Sequence[str]: ...
    @property
    def state(self) -> str: ...


class Reporter(Protocol):
    """Where the stages report while they work: one channel, so the CLI decides how it shows."""

    def progress(self, p: Progress) -> None: ...
    def event(self, text: str) -> None: ...
    def done(self) -> None: ...


class NullReporter:
    """Reports nothing: --quiet, --json, and callers that want no output."""

    def progress(self, p: Progress) -> None:
        pass

    def event(self, text: str) -> None:
        pass

    def done(self) -> None:
        pass


# The default of every stage's `reporter=`: stateless, so one serves all.
QUIET = NullReporter()


def shown(text: str) -> str:
    """`text` safe for a terminal: events quote the service's health output and log lines,
    which a hostile service writes, so its escape sequences are shown, never interpreted."""
    return "".join(ch if ch.isprintable() or ch == "\n" else ascii(ch)[1:-1] for ch in text)


class ProgressLine:
    """One status line that rewrites itself on a terminal; a line every `every` s otherwise.
    Events are whole lines, never throttled."""

    def __init__(self, stream: TextIO | None = None, every: float = 15.0,
                 enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.enabled = enabled
        self._last = -math.inf  # the first progress always shows, however early after boot
        self._width = 0

    def progress(self, p: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self._last < self.every:
            return
        self._last = now
        left = (f"/{format_duration(p.duration)} ({format_duration(p.duration - p.elapsed)} left)"
                if p.duration else "")
        caps = ",".join(c.removeprefix("CAP_") for c in p.capabilities) or "-"
        fams = ",".join(f.removeprefix("AF_") for f in p.families) or "-"
        text = (f"learning {format_duration(p.elapsed)}{left}  events {p.events}  "
                f"paths {p.paths}  families {fams}  caps {caps}  unit {p.state}")
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, text: str) -> None:
        if not self.enabled:
            return
        self.done()  # a status line being rewritten is ended first, not overwritten
        self.stream.write(shown(text) + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0  # ended: a second done() or an event adds no blank line


def summarize(profile: Profile) -> str:
    p = profile
    out: list[str] = []
    out.append(f"subject:      {p.subject.name}")
    out.append(f"sources:      {', '.join(p.sources) or '-'}")
    if p.subject.duration_s is not None:
        out.append(f"traced for:   {format_duration(p.subject.duration_s)}")
    written = p.written_paths(with_groups=True)
    reads = [x for x, k in p.paths.items() if "read" in k]
    execs = sorted(p.execs)
    grouped = sum(g.files for g in p.path_groups.values())
    out.append(f"paths:        {len(p.paths) + grouped} used, {len(reads)} read, "
               f"{len(written)} written, {len(execs)} executed, {len(p.failed_paths)} failed")
    for d, g in sorted(p.path_groups.items())[:10]:
        kinds = ",".join(sorted(g.kinds))
        out.append(f"  grouped     {d!r}: {g.files} more entries ({kinds})" if not d.isprintable()
                   else f"  grouped     {d}: {g.files} more entries ({kinds})")
    for path in sorted(written)[:15]:
        kinds = ",".join(sorted(written[path]))
        out.append(f"  written     {path!r} ({kinds})" if not path.isprintable()
                   else f"  written     {path} ({kinds})")
    if len(written) > 15:
        out.append(f"  ... {len(written) - 15} more written")
    for path in execs[:10]:
        suid = " setuid" if p.execs[path].get("setuid") else ""
        out.append(f"  executed    {path}{suid}")
    fams = ", ".join(f"{k} ({v})" for k, v in sorted(p.families.items())) or "-"
    out.append(f"families:     {fams}")
    for e in sorted(p.binds):
        out.append(f"  bound       {e.proto} {e.addr}:{e.port}")
    for e in sorted(p.peers)[:10]:
        out.append(f"  peer        {e.proto} {e.addr}:{e.port}")
    for e in sorted(p.inbound)[:10]:
        out.append(f"  inbound     {e.proto} {e.addr}:{e.port}")
    for s in sorted(p.unix_sockets)[:10]:
        out.append(f"  unix        {s} ({', '.join(sorted(p.unix_sockets[s]))})")
    if p.capabilities:
        for cap, ev in sorted(p.capabilities.items()):
            out.append(f"capability:   {cap}: {'; '.join(ev.examples[:3])}")
    else:
        out.append("capabilities: none")
    for flag, ev in sorted(p.flags.items()):
        out.append(f"behaviour:    {flag} x{ev.count}: {'; '.join(ev.examples[:3])}")
    top = sorted(p.syscalls.items(), key=lambda kv: -kv[1])[:8]
    out.append(f"syscalls:     {len(p.syscalls)} distinct, {sum(p.syscalls.values())} calls; "
               f"most: {', '.join(f'{k} {v}' for k, v in top)}")
    for w in p.warnings:
        out.append(f"warning:      {w}")
    return "\n".join(out) + "\n"
