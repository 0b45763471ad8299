"""`validate` and `apply` accept only what autosandbox writes (issue #10 item 6): one [Service]
section of the catalogue's sandboxing directives and comments, each value as we render it."""

from __future__ import annotations

from pathlib import Path

import pytest

from autosandbox.errors import UserError
from autosandbox.profile import Endpoint, Fact
from autosandbox.validate.apply import check_applicable
from autosandbox.validate.candidate import read_candidate

from .conftest import sandbox_for, trace_python
from .synth_profiles import served, synth, touch, unit_profile

UNIT = "as-demo.service"
# The file that was installed, rc 0, "healthy", with its ExecStartPre run (issue #10).
PWN = ("[Unit]\nDescription=pwn\n[Service]\nExecStartPre=/bin/touch /run/injected\n"
       "User=root\nProtectSystem=strict\n")


def _refused(text: str, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        read_candidate(text, UNIT)
    assert "\n" not in str(info.value)  # one line


def test_a_real_learned_dropin_reads_back_whole(scratch: Path) -> None:
    odd = scratch / "spool 100%"  # quoted and %-escaped by unitfile
    odd.mkdir()
    profile = trace_python("import sys; open(sys.argv[1] + '/f', 'w').write('x')", str(odd))
    text = sandbox_for(profile).render()
    cand = read_candidate(text, UNIT)
    assert [(s.directive, s.values) for s in cand.sandbox.settings] == \
        [(s.directive, s.values) for s in sandbox_for(profile).settings]
    assert any(s.values == [f'"{scratch}/spool 100%%"'] for s in cand.sandbox.settings
               if s.directive == "ReadWritePaths"), text
    assert cand.status is None  # synthesized, never validated


@pytest.mark.parametrize(("text", "match"), [
    (PWN, "section '\\[Unit\\]'"),
    ("[Service]\nExecStartPre=/bin/touch /run/injected\n", "ExecStartPre= is not"),
    ("[Service]\nUser=root\n", "User= is not"),
    ("[Service]\nEnvironment=LD_PRELOAD=/tmp/x.so\n", "Environment= is not"),
    ("[Service]\nProtectSystem=strict\n[Install]\nWantedBy=x\n", "section '\\[Install\\]'"),
    ("ProtectSystem=strict\n", "outside \\[Service\\]"),
    ("[Service]\nNoSuchThing=1\n", "NoSuchThing= is not"),
    # a continuation joins the next line: `ExecStartPre=` would hide behind a comment
    ("[Service]\nReadWritePaths=/srv/a \\\n ExecStartPre=/bin/sh\n", "continuation"),
    ("[Service]\nProtectSystem=bogus\n", "'bogus' is not a value"),
    ("[Service]\nProtectSystem=\n", "empty ProtectSystem= would reset"),
    ("[Service]\nSystemCallFilter=\n", "empty SystemCallFilter= would reset"),
    ("[Service]\nReadWritePaths=%h/.ssh\n", "'%h/.ssh' is not a value"),
    ("[Service]\nReadWritePaths=\"/srv/a\n", "unbalanced quotes"),
    ("[Service]\nReadWritePaths=relative/path\n", "'relative/path' is not a value"),
    ("[Service]\nStateDirectory=../../etc\n", "is not a value"),
    ("[Service]\nCapabilityBoundingSet=CAP_NOPE\n", "'CAP_NOPE' is not a value"),
    ("[Service]\nCapabilityBoundingSet=~CAP_SYS_ADMIN\n", "is not a value"),
    ("[Service]\nSystemCallFilter=~@mount\n", "'~@mount' is not a value"),
    ("[Service]\nIPAddressAllow=evil.example\n", "is not a value"),
    ("[Service]\nProtectSystem=strict\nProtectSystem=full\n", "set twice"),
    ("[Service]\nProtectSystem=strict\x0bExecStart=/bin/sh\n", "control characters"),
    ("[Service]\n.include /etc/evil\n", "is not an assignment"),
    ("# nothing\n", "sets nothing"),
])
def test_foreign_content_is_refused(text: str, match: str) -> None:
    _refused(text, match)


def test_what_we_write_is_accepted() -> None:
    text = ("# autosandbox: validated on as-demo.service in 3 restart(s), the baseline "
            "included.\n[Service]\n# evidence\nProtectSystem=strict\n"
            "ReadWritePaths=\"/srv/a b\" -/srv/c\nCapabilityBoundingSet=\n"
            "IPAddressDeny=any\nIPAddressAllow=localhost 10.0.0.0/8\n"
            "SystemCallFilter=@system-service sysinfo\nSystemCallErrorNumber=EPERM\n"
            "DeviceAllow=/dev/null rw\nRestrictAddressFamilies=AF_INET AF_UNIX\n"
            "StateDirectory=demo\n\n# Left out:\n#   ProcSubset=: needed\n")
    cand = read_candidate(text, UNIT)
    assert cand.status == "validated" and cand.status_unit == UNIT
    assert cand.sandbox.values("ReadWritePaths") == ['"/srv/a b"', "-/srv/c"]
    assert cand.sandbox.values("CapabilityBoundingSet") == []
    check_applicable(UNIT, text)


def test_apply_refuses_unvalidated_and_other_units_without_force() -> None:
    body = "[Service]\nProtectSystem=strict\n"
    with pytest.raises(UserError, match="carries no validation"):
        check_applicable(UNIT, body)
    failed = "# autosandbox: NOT validated on as-demo.service after 12 restart(s).\n" + body
    with pytest.raises(UserError, match="its validation failed"):
        check_applicable(UNIT, failed)
    other = "# autosandbox: validated on other.service in 2 restart(s).\n" + body
    with pytest.raises(UserError, match=r"validated on other\.service, not"):
        check_applicable(UNIT, other)
    check_applicable(UNIT, failed, force=True)
    with pytest.raises(UserError, match="User= is not"):  # --force never admits foreign text
        check_applicable(UNIT, "[Service]\nUser=root\n", force=True)


def test_every_kind_of_synthesized_line_reads_back() -> None:
    """Writable paths (a sensitive one the user allowed, a name with a space), the unit's own
    directory, a served port, pinned peers, devices, capabilities: all accepted as rendered."""
    p = unit_profile("svc.service", unit_lines=("User=svc",), uid=998, gid=998)
    touch(p, "/var/lib/svc/db", "write", "create", fact=Fact("file", 998, 998, 0o600))
    p.facts["/var/lib/svc"] = Fact("dir", 998, 998, 0o700)
    touch(p, "/run/svc/svc.pid", "write", "create", fact=Fact("file", 998, 998, 0o644))
    p.facts["/run/svc"] = Fact("dir", 998, 998, 0o755)
    touch(p, "/srv/data dir/x", "write", fact=Fact("file", 998, 998, 0o644))
    p.facts["/srv/data dir"] = Fact("dir", 998, 998, 0o755)
    touch(p, "/etc/cron.d/job", "write", fact=Fact("file", 0, 0, 0o644))
    touch(p, "/dev/ttyS0", "read", "write", fact=Fact("char", 0, 20, 0o660))
    p.add_flag("device_nodes", "/dev/ttyS0")
    p.add_cap("CAP_NET_BIND_SERVICE", "bind(80)")
    served(p, "0.0.0.0", 80)
    p.peers.add(Endpoint("AF_INET", "tcp", "10.1.2.3", 5432))
    sb = synth(p, allow_write=("/etc/cron.d",), ip_allow=("10.1.2.0/24",))
    text = sb.render()
    assert "RuntimeDirectoryPreserve=yes" in text  # a zoo run found apply refusing it
    cand = read_candidate(text, "svc.service")
    assert [(s.directive, s.values) for s in cand.sandbox.settings] == \
        [(s.directive, s.values) for s in sb.settings], text
