"""Running the external programs autosandbox asks (auditctl, journalctl, systemctl,
systemd-analyze, the user's checks): one way to run them, one error, one log line each.

Output is read in the C locale (we parse it) and decoded leniently (a journal line may hold
any bytes). A failure is a ToolError, a UserError that names the command and the tail of
what it said on stderr, so the CLI prints it as one line. Long-lived helpers (strace,
bpftrace, the traced command) are started by procs.py and their tracers, not here.
"""

from __future__ import annotations

import logging
import os
import shlex
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
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, encoding="utf-8",
                            errors="replace", timeout=timeout, env=full, check=False,
                            start_new_session=new_session)
    except subprocess.TimeoutExpired:
        log.debug("  %s: timed out after %.1f s", os.path.basename(argv[0]), timeout)
        raise ToolTimeout(argv, None, "", timeout) from None
    took = time.monotonic() - began
    said = tail(cp.stderr)
    log.debug("  %s: exit %d in %.2f s%s", os.path.basename(argv[0]), cp.returncode, took,
              f" ({said})" if cp.returncode and said else "")
    if check and cp.returncode != 0:
        raise ToolError(argv, cp.returncode, cp.stderr or cp.stdout)
    return cp
