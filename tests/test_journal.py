"""Why a unit failed to start under tracing, from its journal (lines recorded in the
container: Debian's redis-server.service before the trace drop-in allowed exec of the shim)."""

from __future__ import annotations

from autosandbox.systemd.journal import why_it_failed

REDIS = """\
Stopped redis-server.service - Advanced key-value store.
Starting redis-server.service - Advanced key-value store...
redis-server.service: Failed to locate executable /bin/sh: Permission denied
redis-server.service: Failed at step EXEC spawning /bin/sh: Permission denied
redis-server.service: Main process exited, code=exited, status=203/EXEC
redis-server.service: Failed with result 'exit-code'.
Failed to start redis-server.service - Advanced key-value store.""".splitlines()


def test_systemds_own_account_comes_first() -> None:
    assert why_it_failed(REDIS) == ("redis-server.service: Failed to locate executable "
                                    "/bin/sh: Permission denied")


def test_else_the_services_last_word() -> None:
    lines = ["Starting x...", "x[12]: fatal: cannot read /etc/x.conf", "Stopped x."]
    assert why_it_failed(lines) == "Stopped x."
    assert why_it_failed([]) is None
