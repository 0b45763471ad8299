"""Running the external programs autosandbox asks (auditctl, journalctl, systemctl,
systemd-analyze, the user's checks): one way to run them, one error, one log line each.

Output is read in the C locale (we parse it) and decoded leniently (a journal line may hold
any bytes). A failure is a ToolError, a UserError that names the command and the tail of
what it said on stderr, so the CLI prints it as one line. Long-lived helpers (strace,
bpftrace, the traced command) are started by procs.py and their tracers, not here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from autosandbox.errors import UserError

log = logging.getLogger(__name__)

_SHOWN = 200  # characters of a command line or of its stderr that an error line shows


def shown(argv: Sequence[str]) -> str:
    """A command line as a user would type it, cut to one short line."""
    text = shlex.join(argv).replace("\n", "\\n")
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def tail(text: str) -> str:
    """The last thing a program said (its last non-empty line), on one short line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= _SHOWN else last[:_SHOWN - 3] + "..."


class ToolError(UserError):
    """A program autosandbox ran failed: `argv`, its exit status (None: it timed out) and
    what it said on stderr (stdout when stderr was empty)."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str,
                 timeout: float | None = None) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = (f"timed out after {timeout:.0f}s" if returncode is None
                  else f"failed (exit {returncode})")
        said = tail(stderr)
        super().__init__(f"{shown(argv)} {status}" + (f": {said}" if said else ""))


class ToolTimeout(ToolError):
    """The program ran longer than its timeout and was killed."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float | None = None,
        env: Mapping[str, str] | None = None, c_locale: bool = True,
        new_session: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `argv` to its end, stdout and stderr captured as text. `check`: a non-zero exit
    is a ToolError (False: the caller reads the exit status). `c_locale` False leaves the
    environment as it is (the user's own checks). A missing program is an OSError, as from
    subprocess. A timeout is a ToolTimeout whatever `check` says."""
    full = dict(os.environ if env is None else env)
    if c_locale:
        full["LC_ALL"] = "C"
    log.debug("run: %s", shown(argv))
    began = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace", env=full,
                            start_new_session=new_session)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:  # a timeout, or a signal: nothing it started outlives it
        _kill(proc, new_session)
        if isinstance(exc, subprocess.TimeoutExpired):
            log.debug("  %s: timed out after %.1f s", os.path.basename(argv[0]), timeout)
            raise ToolTimeout(argv, None, "", timeout) from None
        raise
    cp = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    took = time.monotonic() - began
    said = tail(cp.stderr)
    log.debug("  %s: exit %d in %.2f s%s", os.path.basename(argv[0]), cp.returncode, took,
              f" ({said})" if cp.returncode and said else "")
    if check and cp.returncode != 0:
        raise ToolError(argv, cp.returncode, cp.stderr or cp.stdout)
    return cp


def _kill(proc: subprocess.Popen[str], session: bool) -> None:
    """SIGKILL the program and, when it leads a session of its own, everything in it (a
    shell's children hold our pipes and would outlive a timeout)."""
    with contextlib.suppress(ProcessLookupError):
        if session:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()  # unread: a grandchild outside the session may still hold it
