"""Denials -> what relaxation may grant (issue #9 items 3 and 7, #10 item 5).

tests/data/denials.journal holds what real programs printed on this host when run as root
without the capability (setpriv --bounding-set=-dac_override,-dac_read_search cat F,
--bounding-set=-chown chown 65534 G, --bounding-set=-kill /bin/kill -HUP PID-of-uid-65534,
python3 open(F)), F being owned by 65534 with mode 0600: what the journal shows for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autosandbox.synth.grants import Evidence
from autosandbox.synth.model import Denial
from autosandbox.validate.candidate import parse_candidate
from autosandbox.validate.denials import parse_denials
from autosandbox.validate.relax import relax_by_evidence, relax_disk
from autosandbox.validate.snapshot import Change, Entry

RECORDED = (Path(__file__).parent / "data" / "denials.journal").read_text().splitlines()
RECORDED_FILE = "/tmp/capdemo/f"
ROOT = os.geteuid() == 0


def _caps(denials: list[Denial], ev: Evidence | None = None,
          extra: str = "") -> tuple[list[str] | None, Evidence]:
    sb = parse_candidate("[Service]\nProtectSystem=strict\nCapabilityBoundingSet=\n" + extra,
                         "demo.service")
    ev = ev or Evidence()
    relaxed, _ = relax_by_evidence(sb, denials, 2, ev)
    return relaxed.values("CapabilityBoundingSet"), ev


def _journal(path: str) -> list[Denial]:
    return parse_denials([line.replace(RECORDED_FILE, path) for line in RECORDED])


def test_journal_lines_name_the_call_and_object() -> None:
    found = [(d.kind, d.path, d.syscall) for d in parse_denials(RECORDED)]
    assert found == [("eacces", RECORDED_FILE, None),
                     ("eperm", "/tmp/capdemo/g", "chown"),
                     ("eperm", None, "kill")]  # /bin/kill is the program, not the object
    # the Python line names the same file: one denial, not two


def test_chown_and_kill_map_to_their_capability_for_a_root_service() -> None:
    chown, kill = parse_denials(RECORDED)[1:3]
    assert _caps([chown])[0] == ["CAP_CHOWN"]
    assert _caps([kill])[0] == ["CAP_KILL"]


def test_a_service_running_as_another_user_gets_no_capability() -> None:
    chown, kill = parse_denials(RECORDED)[1:3]
    caps, ev = _caps([chown, kill], Evidence(may_be_root=False))
    assert caps == []
    assert all("not root" in line for line in ev.log) and len(ev.log) == 2
    # audit says which uid called: that wins over the unit's User=
    by_user = Denial("eperm", None, "audit", "kill() = EPERM by /bin/kill", "kill", uid=1000)
    assert _caps([by_user])[0] == []


@pytest.mark.skipif(not ROOT, reason="needs root to own files as another user")
def test_dac_capability_follows_the_mode_bits(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    private = tmp_path / "private"
    private.write_text("x")
    os.chown(private, 65534, 65534)
    private.chmod(0o600)
    # root without CAP_DAC_READ_SEARCH cannot read it: that capability first ...
    first = _journal(str(private))[0]
    caps, _ = _caps([first])
    assert caps == ["CAP_DAC_READ_SEARCH"]
    # ... and only when the same open is refused again with it, CAP_DAC_OVERRIDE
    caps, _ = _caps([first], extra="CapabilityBoundingSet=CAP_DAC_READ_SEARCH\n")
    assert caps == ["CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"]
    readable = tmp_path / "readable"
    readable.write_text("x")
    os.chown(readable, 65534, 65534)
    readable.chmod(0o644)  # read is fine for anyone: a refused access is a write
    assert _caps(_journal(str(readable))[:1])[0] == ["CAP_DAC_OVERRIDE"]


@pytest.mark.skipif(not ROOT, reason="needs root to own files as another user")
def test_a_plain_ownership_problem_adds_no_capability(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    mine = tmp_path / "mine"
    mine.write_text("x")
    mine.chmod(0o644)  # root's own file, writable by its owner: bits are not the problem
    caps, ev = _caps(_journal(str(mine))[:1])
    assert caps == [] and "mode bits" in ev.log[0]
    # the trial itself changed the owner (a StateDirectory= chown): not evidence of a need
    other = tmp_path / "chowned"
    other.write_text("x")
    os.chown(other, 65534, 65534)
    other.chmod(0o600)
    caps, ev = _caps(_journal(str(other))[:1], Evidence(changed=frozenset({str(tmp_path)})))
    assert caps == [] and "changed" in ev.log[0]


def test_a_denied_write_never_grants_a_sensitive_place() -> None:
    cron = Denial("erofs", "/etc/cron.d/job", "audit", "openat() = EROFS on /etc/cron.d/job",
                  "openat", uid=0)
    sb = parse_candidate("[Service]\nProtectSystem=strict\n", "demo.service")
    ev = Evidence()
    sb, done = relax_by_evidence(sb, [cron], 2, ev)
    assert done == []
    assert sb.values("ReadWritePaths") is None
    assert "/etc/cron.d" in ev.log[0] and "--allow-write" in ev.log[0]
    allowed = Evidence(allowed=("/etc/cron.d",))
    assert [r.after for r in relax_by_evidence(sb, [cron], 2, allowed)[1]] == ["/etc/cron.d"]


def test_a_write_below_missing_directories_widens_nothing(tmp_path: Path) -> None:
    deep = tmp_path / "no" / "such" / "dir" / "file"
    dn = Denial("erofs", str(deep), "journal", f"open {deep}: Read-only file system")
    sb = parse_candidate("[Service]\nProtectSystem=strict\n", "demo.service")
    ev = Evidence()
    sb, done = relax_by_evidence(sb, [dn], 2, ev)
    assert done == []
    assert sb.values("ReadWritePaths") is None and "does not exist" in ev.log[0]


def test_a_directory_systemd_chowned_becomes_a_plain_writable_path() -> None:
    sb = parse_candidate("[Service]\nProtectSystem=strict\nStateDirectory=demo\n"
                         "RuntimeDirectory=demo\nUMask=0077\n", "demo.service")
    chowned = Change("/var/lib/demo", Entry("dir", 65534, 65534, 0o700),
                     Entry("dir", 0, 0, 0o755))
    sb, done = relax_disk(sb, [chowned], 3, Evidence())
    assert [(r.directive, r.after) for r in done] == \
        [("StateDirectory", "ReadWritePaths=/var/lib/demo")]
    assert sb.values("StateDirectory") is None
    assert sb.values("ReadWritePaths") == ["/var/lib/demo"]
    assert sb.values("RuntimeDirectory") == ["demo"] and sb.values("UMask") == ["0077"]
    # a pid file created again under UMask=0077 (memcached's 0644 -> 0600): UMask= it is,
    # not the RuntimeDirectory= it lives in
    pid = Change("/run/demo/demo.pid", Entry("file", 0, 0, 0o644), Entry("file", 0, 0, 0o600))
    sb, done = relax_disk(sb, [pid], 4, Evidence())
    assert [(r.directive, r.after) for r in done] == \
        [("UMask", "0027")]
    assert sb.values("RuntimeDirectory") == ["demo"]


def test_an_entry_the_service_removed_from_its_runtime_directory_is_its_own_doing() -> None:
    """dovecot deletes its login sockets as it fails: the trial's disk watch saw
    /run/dovecot/login/dns-client removed, and RuntimeDirectory=dovecot became
    ReadWritePaths=/run/dovecot, which no boot creates (status=226/NAMESPACE after one).
    systemd removes the directory itself at stop, with all it holds: that still relaxes."""
    sb = parse_candidate("[Service]\nProtectSystem=strict\nRuntimeDirectory=dovecot\n"
                         "RuntimeDirectoryPreserve=yes\n", "dovecot.service")
    socket = Change("/run/dovecot/login/dns-client", Entry("other", 0, 0, 0o666),
                    Entry("missing"))
    kept, done = relax_disk(sb, [socket], 2, Evidence())
    assert done == [] and kept.values("RuntimeDirectory") == ["dovecot"]

    # the whole directory gone: with Preserve=, the service's doing too; without it, systemd
    # removed it at stop: Preserve= keeps it, and RuntimeDirectory= still makes it at every
    # start (a plain ReadWritePaths= entry would be missing after a boot)
    gone = [Change("/run/dovecot", Entry("dir", 0, 0, 0o755), Entry("missing")), socket]
    _, done = relax_disk(sb, gone, 2, Evidence())
    assert done == []
    bare = parse_candidate("[Service]\nProtectSystem=strict\nRuntimeDirectory=dovecot\n",
                           "dovecot.service")
    kept, done = relax_disk(bare, gone, 2, Evidence())
    assert [(r.directive, r.after) for r in done] == [("RuntimeDirectoryPreserve", "yes")]
    assert kept.values("RuntimeDirectory") == ["dovecot"]
    assert kept.values("RuntimeDirectoryPreserve") == ["yes"]
    assert kept.values("ReadWritePaths") is None


@pytest.mark.skipif(not ROOT or not os.path.isdir("/run"), reason="needs root and /run")
def test_a_denied_file_in_run_is_not_granted_alone() -> None:
    """/run is emptied at every boot: a grant of the file alone is skipped after the next one
    and the read-only /run refuses the new file. A file of a shared directory that keeps its
    files is still granted alone."""
    pid = Path(f"/run/autosandbox-test-{os.getpid()}.pid")
    pid.write_text("1\n")
    try:
        dn = Denial("erofs", str(pid), "journal", f"open {pid}: Read-only file system")
        sb = parse_candidate("[Service]\nProtectSystem=strict\n", "demo.service")
        ev = Evidence()
        sb, done = relax_by_evidence(sb, [dn], 2, ev)
        assert done == [] and sb.values("ReadWritePaths") is None
        assert "not made writable: /run" in ev.log[0] and "--allow-write /run" in ev.log[0]
    finally:
        pid.unlink()
    kept = Path("/var/lib") / f"autosandbox-test-{os.getpid()}.state"
    kept.write_text("")
    try:
        dn = Denial("erofs", str(kept), "journal", f"open {kept}: Read-only file system")
        sb = parse_candidate("[Service]\nProtectSystem=strict\n", "demo.service")
        sb, done = relax_by_evidence(sb, [dn], 2, Evidence())
        assert [r.after for r in done] == [str(kept)]
    finally:
        kept.unlink()
