"""The `autosandbox` program. Signals are routed before the (slow) imports: a SIGTERM at
start-up is an interruption like any other (exit 130), never a half-created state."""

import contextlib
import os
import signal
import sys

from autosandbox import interrupts


def main() -> None:
    interrupts.install()
    code: object = 0
    try:
        from autosandbox.cli import main as cli

        cli()
    except KeyboardInterrupt:  # only while importing: cli() turns its own into exit 130
        sys.stderr.write("autosandbox: interrupted while starting: nothing was done\n")
        code = 130
    except SystemExit as exc:
        code = exc.code
    # The exit code is decided and everything we started is stopped: a signal from here on
    # is ignored, and the interpreter's shutdown (which resets signal handlers to the
    # default and may report a caught Ctrl-C as death by SIGINT) is skipped.
    for s in interrupts.SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    os._exit(code or 0)


if __name__ == "__main__":
    main()
