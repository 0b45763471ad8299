"""A unit that opens users' login sessions (sshd, cron, vsftpd: the program calls
pam_open_session) is refused before anything changes: its sandbox would confine every session
it starts (an admin's `apt upgrade` over ssh under ProtectSystem=strict; seen in the
container: learned and validated on ssh.service, applied, and then root's login failed with
"Could not open user 'root' authorized keys ... Permission denied" under ProtectHome=yes).
One found only in the trace (behind a wrapper) is refused after it, the unit restored.
Services: the image's ssh.service; integration/services/as-kinds (as-wrap.service,
as-sshd.socket)."""

from __future__ import annotations

from pathlib import Path

import pytest
from systemd_harness import unit_property
from test_learn import autosandbox
from test_unit_kinds import QUICK, kinds, no_trace_left, refused  # noqa: F401 (a fixture)


def test_a_session_opener_is_refused_before_anything_changes() -> None:
    if unit_property("ssh.service", "ActiveState") != "active":
        pytest.skip("ssh.service is not running in this image")
    pid = unit_property("ssh.service", "MainPID")
    line = refused(autosandbox("learn", "-q", "ssh.service", "--duration", "3s"),
                   "ssh.service opens users' login sessions", "/usr/sbin/sshd",
                   "pam_open_session", "nothing was changed", "--sessions")
    assert len(line) < 400
    assert unit_property("ssh.service", "MainPID") == pid  # not restarted
    no_trace_left("ssh.service")
    assert not Path("/var/lib/autosandbox/ssh.service").exists()


def test_one_behind_a_wrapper_is_refused_after_the_trace(kinds) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    unit = "as-wrap.service"
    kinds.start(unit)
    cp = autosandbox("learn", "-q", unit, *QUICK)
    # it was restarted to be traced: not "nothing was changed" (helper, dovecot)
    refused(cp, f"{unit} opens users' login sessions", "/usr/sbin/sshd", "--sessions",
            "it was traced (restarted, unless its socket or timer starts it)")
    assert "nothing was changed" not in cp.stderr
    no_trace_left(unit)
    assert unit_property(unit, "ActiveState") == "active"  # restored, running as found
    assert not Path(f"/var/lib/autosandbox/{unit}/learned.conf").exists()
    assert not Path(f"/var/lib/autosandbox/{unit}/unvalidated.conf").exists()


def test_a_per_connection_session_opener_is_refused(kinds) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # Accept=yes: its socket, its template and an instance all lead to the template, whose
    # settings are read from a probe instance (systemd loads no bare template)
    for name in ("as-sshd.socket", "as-sshd@.service", "as-sshd@1.service"):
        refused(autosandbox("learn", "-q", name, "--duration", "3s"),
                "as-sshd@.service opens users' login sessions", "/usr/sbin/sshd",
                "--sessions")
    no_trace_left("as-sshd@.service")
    assert not Path("/var/lib/autosandbox/as-sshd@.service").exists()
