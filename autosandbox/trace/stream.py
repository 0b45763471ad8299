"""A FIFO that strace writes its trace into and a thread that parses it as it comes.

The reader holds a write end of its own so that it never sees a premature end-of-file (before
strace opened the FIFO, or between two strace processes of one unit); `close()` drops that end
once every tracer is gone, and the reader then drains what is left and stops.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

from autosandbox.profile import Profile
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.strace_parser import StraceParser


class TraceStream:
    def __init__(self, recorder: Recorder, fifo_dir: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="autosandbox-", dir=fifo_dir))
        self.fifo = self.dir / "trace.fifo"
        os.mkfifo(self.fifo, 0o600)
        self.recorder = recorder
        self.parser = StraceParser(READ_CALLS)
        self.events = 0
        self.error: BaseException | None = None
        self._rfd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._keepalive: int | None = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(self._rfd, True)
        self._thread = threading.Thread(target=self._run, name="strace-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        handle = self.recorder.handle
        feed = self.parser.feed
        try:
            # strace escapes every non-ASCII byte, so latin-1 decoding is exact and fastest.
            with os.fdopen(self._rfd, "r", encoding="latin-1", buffering=1 << 20) as f:
                for line in f:
                    ev = feed(line[:-1] if line.endswith("\n") else line)
                    if ev is not None:
                        self.events += 1
                        handle(ev)
        except BaseException as exc:  # surfaced by close(): a parser bug must not hang us
            self.error = exc

    def drained(self, timeout: float) -> bool:
        """Drop our write end and wait (at most `timeout` s) for the writers to go: False
        while one still writes (then the recorder is still being fed: not to be finished)."""
        if self._keepalive is not None:
            os.close(self._keepalive)
            self._keepalive = None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> Profile:
        """Stop once all writers are gone; return the recorder's finished profile."""
        if self._keepalive is not None:
            os.close(self._keepalive)
            self._keepalive = None
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self.fifo.unlink()
            self.dir.rmdir()
        if self.error is not None:
            raise self.error
        return self.recorder.finish(self.parser)
