"""Writable places from hand-built profiles: what is granted, what is withheld and why, and
which *Directory= lines are written (only where systemd would change nothing on disk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autosandbox.errors import UserError
from autosandbox.profile import Fact, PathGroup
from autosandbox.synth import host, sensitive
from autosandbox.validate.relax import relax_row

from .synth_profiles import link, synth, touch, unit_profile, verified, withheld_lines

# /run's runtime configuration, read-only when strict leaves /run writable
RUN_CONFIG = sorted(f"-{g}" for g in sensitive.RUNTIME_CONFIG)

ABSENT = "/srv/autosandbox-absent-7f3e"  # a place that does not exist on this machine

# Issue #10 item 5: each became a plain ReadWritePaths= entry without a word.
SENSITIVE = [
    ("/etc/systemd/system/evil.service", "/etc/systemd/system", "run code as root"),
    ("/etc/cron.d/job", "/etc/cron.d", "cron jobs run as root"),
    ("/etc/sudoers.d/evil", "/etc/sudoers.d", "sudo rules grant root"),
    ("/root/.ssh/authorized_keys", "/root/.ssh", "ssh keys"),
    ("/etc/profile.d/evil.sh", "/etc/profile.d", "login shells run it"),
    ("/etc/apt/apt.conf.d/99evil", "/etc/apt/apt.conf.d", "hooks run as root"),
]


@pytest.mark.parametrize(("path", "directory", "why"), SENSITIVE)
def test_sensitive_place_is_withheld_unless_named(path: str, directory: str, why: str) -> None:
    p = unit_profile()
    touch(p, path, "create", "write", fact=Fact("file", 0, 0, 0o644))
    sb = synth(p)
    text = verified(p, sb)
    assert sb.values("ReadWritePaths") is None
    assert all(sb.values(d) is None for d in ("StateDirectory", "RuntimeDirectory"))
    assert directory not in "".join(line for line in text.splitlines()
                                    if not line.startswith("#"))
    [line] = withheld_lines(sb)
    assert line.startswith(f"{path} written (") and why in line
    assert line.endswith(f"--allow-write {directory} grants it")
    assert "# Withheld" in text and f"# {path} written" in text
    assert any(w.startswith(f"withheld: {path}") for w in sb.warnings)  # the CLI prints these
    assert sb.to_json()["withheld"] == [{**w.to_json(), "writable_anyway": False}
                                        for w in sb.withheld]

    granted = synth(p, allow_write=[directory])
    verified(p, granted)
    assert granted.values("ReadWritePaths") == [directory]
    assert granted.withheld == [] and granted.allow_write == [directory]


def test_rewriting_a_sensitive_file_in_place_is_withheld_too() -> None:
    p = unit_profile()
    touch(p, "/etc/sudoers", "write", fact=Fact("file", 0, 0, 0o440))
    sb = synth(p)
    assert sb.values("ReadWritePaths") is None
    assert "/etc/sudoers: sudo rules grant root" in withheld_lines(sb)[0]


def test_symlink_into_etc_is_resolved_then_withheld() -> None:
    # /srv/x/link -> /etc; the service renamed a file through it (issue #10 item 3)
    p = unit_profile()
    touch(p, f"{ABSENT}/link/passwd", "create", "rename")
    link(p, f"{ABSENT}/link", "/etc")
    p.facts["/etc"] = Fact("dir", 0, 0, 0o755)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") is None
    [line] = withheld_lines(sb)  # renaming needs the directory the link leads to: /etc
    assert line.startswith(f"{ABSENT}/link/passwd (= /etc/passwd) written (/etc is a shared")
    assert synth(p, allow_write=[f"{ABSENT}/link"]).values("ReadWritePaths") is None


def test_truncated_long_path_never_widens_to_a_top_level_directory() -> None:
    # A path we could not read whole stands for a parent that does not exist: climbing to
    # an existing ancestor must stop short of granting / (issue #10 item 1).
    p = unit_profile()
    cut = "/" + "t" * 199
    touch(p, cut + "/f", "create", "write")
    p.facts[cut] = Fact("missing")
    sb = synth(p)
    assert sb.values("ReadWritePaths") is None
    assert [w.path for w in sb.withheld] == ["/"]
    # the hint never suggests the whole file system (named, helper: "--allow-write / grants
    # it", which synthesize then turned into ReadWritePaths=/)
    hint = sb.withheld[0].hint
    assert "--allow-write /" not in hint and "/var/lib/svc with StateDirectory=svc" in hint, hint


def test_file_in_shared_directory_is_granted_alone_when_rewritten_else_withheld() -> None:
    # haproxy: /run/haproxy.pid in /run itself (issue #9 item 9: ReadWritePaths=/run). Made
    # by someone else at each boot (tmpfiles.d), it is rewritten in place: the file alone.
    p = unit_profile("haproxy.service")
    touch(p, "/run/haproxy.pid", "write", fact=Fact("file", 0, 0, 0o644))
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") == ["/run/haproxy.pid"]
    assert sb.withheld == []
    # a file it creates in a shared directory that keeps its files: the file alone too
    k = unit_profile("foo.service")
    touch(k, "/var/lib/foo.state", "create", "write", fact=Fact("file", 0, 0, 0o644))
    assert synth(k).values("ReadWritePaths") == ["-/var/lib/foo.state"]
    # created and removed each time: the directory would be needed; it is not granted
    q = unit_profile("haproxy.service")
    touch(q, "/run/haproxy.pid", "create", "write", "delete")
    sb = synth(q)
    verified(q, sb)
    assert sb.values("ReadWritePaths") is None
    [line] = withheld_lines(sb)
    assert "/run is a shared top-level directory" in line
    assert "RuntimeDirectory=haproxy" in line and "--allow-write /run grants it" in line
    assert synth(q, allow_write=["/run"]).values("ReadWritePaths") == ["/run"]


def test_var_run_and_run_are_one_directory() -> None:
    p = unit_profile("foo.service")
    link(p, "/var/run", "/run")
    touch(p, "/var/run/foo/a.pid", "create", "write")
    touch(p, "/run/foo/b.sock", "create")
    p.facts["/run/foo"] = Fact("dir", 12, 12, 0o750)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") == ["/run/foo"]
    assert sb.values("RuntimeDirectory") is None


def test_path_group_makes_its_directory_writable_unless_withheld() -> None:
    p = unit_profile()
    store = f"{ABSENT}/objects"
    touch(p, store + "/x", "read")
    p.facts[store] = Fact("dir", 0, 0, 0o755)
    p.path_groups[store] = PathGroup({"create": 5000, "write": 5000}, 5000, [store + "/ab12"])
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") == [store]
    q = unit_profile()
    q.path_groups["/run"] = PathGroup({"create": 900}, 900, ["/run/f1"])
    sb = synth(q)
    assert sb.values("ReadWritePaths") is None
    assert "900 entries of /run" in withheld_lines(sb)[0]


def test_entries_below_another_are_dropped() -> None:
    p = unit_profile()
    touch(p, f"{ABSENT}/spool/in/a", "create", "write")
    touch(p, f"{ABSENT}/spool/b", "create", "write")
    sb = synth(p)
    assert sb.values("ReadWritePaths") == [f"{ABSENT}/spool"]


# -- *Directory= only where systemd changes nothing (issue #9 item 1) ---------------------

def test_postgresql_instance_gets_read_write_paths_not_directories() -> None:
    p = unit_profile("postgresql@15-main.service", uid=105, gid=111, user="postgres",
                     unit_lines=["User=postgres", "Group=postgres"])
    link(p, "/var/run", "/run")
    touch(p, "/var/run/postgresql/15-main.pid", "create", "write", "delete")
    p.facts["/var/run/postgresql"] = Fact("dir", 105, 111, 0o2775)  # lstat through the link
    touch(p, "/var/lib/postgresql/15/main/base/1/2", "create", "write")
    for d in ("/var/lib/postgresql", "/var/lib/postgresql/15", "/var/lib/postgresql/15/main"):
        p.facts[d] = Fact("dir", 105, 111, 0o700 if d.endswith("main") else 0o755)
    touch(p, "/var/log/postgresql/postgresql-15-main.log", "write",
          fact=Fact("file", 105, 4, 0o640))
    sb = synth(p)
    verified(p, sb)
    for d in ("StateDirectory", "RuntimeDirectory", "LogsDirectory", "CacheDirectory"):
        assert sb.values(d) is None, d
    assert sb.values("ReadWritePaths") == ["/run/postgresql", "/var/lib/postgresql/15/main/base/1",
                                           "/var/log/postgresql/postgresql-15-main.log"]
    assert sb.withheld == []


def test_template_instance_never_gets_a_shared_directory() -> None:
    p = unit_profile("pg@main.service", uid=105, gid=111, unit_lines=["User=pg"])
    touch(p, "/run/pg/x.pid", "create")
    p.facts["/run/pg"] = Fact("dir", 105, 111, 0o755)  # exactly what systemd would make it
    sb = synth(p)
    assert sb.values("RuntimeDirectory") is None
    assert sb.values("ReadWritePaths") == ["/run/pg"]
    assert "template instance" in next(s.evidence for s in sb.settings
                                       if s.directive == "ReadWritePaths")


def test_apache2_log_directory_keeps_its_group_and_mode() -> None:
    p = unit_profile("apache2.service")
    touch(p, "/var/log/apache2/access.log", "create", "write")
    p.facts["/var/log/apache2"] = Fact("dir", 0, 4, 0o750)  # root:adm 0750
    sb = synth(p)
    verified(p, sb)
    assert sb.values("LogsDirectory") is None
    assert sb.values("ReadWritePaths") == ["/var/log/apache2"]
    ev = next(s.evidence for s in sb.settings if s.directive == "ReadWritePaths")
    assert "uid 0, gid 4, mode 0750" in ev and "mode 0755" in ev


@pytest.mark.parametrize(("service", "dirs"), [
    # mosquitto drops privileges itself: no User=, its directories belong to mosquitto
    ("mosquitto", {"/var/lib/mosquitto": Fact("dir", 107, 113, 0o755),
                   "/run/mosquitto": Fact("dir", 107, 113, 0o755),
                   "/var/log/mosquitto": Fact("dir", 107, 0, 0o755)}),
    ("haproxy", {"/run/haproxy": Fact("dir", 108, 114, 0o2775)}),
    ("dnsmasq", {"/run/dnsmasq": Fact("dir", 109, 65534, 0o755)}),
])
def test_daemons_dropping_privileges_get_read_write_paths(
        service: str, dirs: dict[str, Fact]) -> None:
    p = unit_profile(f"{service}.service")  # root, no User=
    for d, f in dirs.items():
        touch(p, f"{d}/{service}.x", "create", "write")
        p.facts[d] = f
    sb = synth(p)
    verified(p, sb)
    for directive in ("StateDirectory", "RuntimeDirectory", "LogsDirectory"):
        assert sb.values(directive) is None
    assert sb.values("ReadWritePaths") == sorted(dirs)


def test_own_directory_already_as_systemd_makes_it_becomes_a_directory_directive() -> None:
    p = unit_profile("myapp.service", uid=1234, gid=1234,
                     unit_lines=["User=myapp", "StateDirectoryMode=0700"])
    touch(p, "/var/lib/myapp/db", "create", "write")
    p.facts["/var/lib/myapp"] = Fact("dir", 1234, 1234, 0o700)
    touch(p, "/run/myapp/myapp.sock", "create")
    p.facts["/run/myapp"] = Fact("dir", 1234, 1234, 0o755)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("StateDirectory") == ["myapp"]
    assert sb.values("RuntimeDirectory") == ["myapp"]
    assert sb.values("RuntimeDirectoryPreserve") == ["yes"]  # stopping must not remove it
    assert sb.values("ReadWritePaths") is None
    assert "systemd changes nothing" in next(s.evidence for s in sb.settings
                                             if s.directive == "StateDirectory")


def test_runtime_directory_not_written_when_preserving_would_change_the_units_own() -> None:
    p = unit_profile("myapp.service", uid=1234, gid=1234,
                     unit_lines=["User=myapp", "RuntimeDirectory=myapp-own"])
    touch(p, "/run/myapp/x", "create")
    p.facts["/run/myapp"] = Fact("dir", 1234, 1234, 0o755)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("RuntimeDirectoryPreserve") is None
    assert sb.values("ReadWritePaths") == ["/run/myapp"]


def test_dynamic_user_unit_is_covered_by_its_own_state_directory() -> None:
    # issue #16 item 8: a redundant ReadWritePaths=/var/lib/private/dyn beside StateDirectory=
    p = unit_profile("dyn.service", uid=61234, gid=None, dynamic_user=True,
                     unit_lines=["DynamicUser=yes", "StateDirectory=dyn"])
    link(p, "/var/lib/dyn", "/var/lib/private/dyn")
    touch(p, "/var/lib/dyn/counter", "create", "write", "rename")
    touch(p, "/var/cache/dyn/blob", "create", "write")  # never declared
    p.facts["/var/cache/dyn"] = Fact("dir", 61234, 61234, 0o755)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("StateDirectory") is None  # the unit's own line stays the unit's
    assert sb.values("CacheDirectory") is None  # never declared: not invented
    assert sb.values("ReadWritePaths") == ["/var/cache/dyn"]
    ps = next(s.evidence for s in sb.settings if s.directive == "ProtectSystem")
    assert "the unit's own StateDirectory=dyn" in ps


def test_writes_below_a_declared_directory_of_a_template_use_the_instance_name() -> None:
    p = unit_profile("web@blue.service", unit_lines=["StateDirectory=web-%i"])
    touch(p, "/var/lib/web-blue/data", "create", "write")
    sb = synth(p)
    assert sb.values("ReadWritePaths") is None


# -- pure: no host question when the profile has facts -------------------------------------

def test_synthesis_from_facts_never_asks_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not os.path.lexists(ABSENT)

    def no_host(*args: object) -> object:
        raise AssertionError(f"asked the host about {args}")

    monkeypatch.setattr(host, "host_fact", no_host)
    monkeypatch.setattr(host, "open", no_host, raising=False)
    p = unit_profile("absentd.service", uid=4321, gid=4321, unit_lines=["User=absentd"])
    touch(p, "/var/lib/absentd/state", "create", "write")
    p.facts["/var/lib/absentd"] = Fact("dir", 4321, 4321, 0o755)
    touch(p, f"{ABSENT}/conf", "write", fact=Fact("file", 0, 0, 0o600))
    p.execs[f"{ABSENT}/bin/absentd"] = {"setuid": False, "setgid": False, "elf32": True}
    sb = synth(p)
    assert sb.values("StateDirectory") == ["absentd"]
    assert sb.values("ReadWritePaths") == [f"{ABSENT}/conf"]
    assert sb.values("SystemCallArchitectures") is None  # from execs' elf32, not the file


def test_profile_without_facts_asks_the_host(scratch: Path) -> None:
    (scratch / "f").write_text("x")
    p = unit_profile()
    p.facts.clear()
    p.add_path(str(scratch / "f"), "write")
    assert synth(p).values("ReadWritePaths") == [str(scratch / "f")]


def test_allow_write_must_be_an_absolute_safe_path() -> None:
    p = unit_profile()
    for bad in ("etc/cron.d", "/etc/\ncron.d", ""):
        with pytest.raises(UserError):
            synth(p, allow_write=[bad])


# -- devices ---------------------------------------------------------------------------

def test_block_device_is_withheld_char_device_allowed() -> None:
    p = unit_profile()
    p.add_flag("device_nodes", "/dev/absent-blk")
    touch(p, "/dev/absent-blk", "read", "write", fact=Fact("block", 0, 6, 0o660))
    touch(p, "/dev/absent-chr", "read", fact=Fact("char", 0, 0, 0o666))
    p.facts["/dev"] = Fact("dir", 0, 0, 0o755)
    sb = synth(p)
    text = verified(p, sb)
    assert "DeviceAllow=/dev/absent-chr r" in text
    assert "/dev/absent-blk" not in sb.values("DeviceAllow")  # type: ignore[operator]
    assert "block device" in withheld_lines(sb)[0]
    assert "DeviceAllow=/dev/absent-blk rw" in verified(
        p, synth(p, allow_write=["/dev/absent-blk"]))


# /dev/shm is left to PrivateDevices=/ProtectSystem= (API file systems are never listed)
@pytest.mark.parametrize("directory", sorted(sensitive.BROAD - {"/dev/shm"}
                                             | {"/opt", "/usr", "/boot"}))
def test_no_broad_directory_is_ever_granted_on_evidence(directory: str) -> None:
    p = unit_profile()
    base = directory.rstrip("/")
    touch(p, f"{base}/new-entry", "create", "write", "rename")
    touch(p, f"{base}/made", "mkdir", fact=Fact("dir", 0, 0, 0o755))
    touch(p, f"{base}/made/inner/f", "create")  # climbs through what it made itself
    p.facts[f"{base}/made/inner"] = Fact("missing")
    sb = synth(p)
    verified(p, sb)
    granted = sb.values("ReadWritePaths") or []
    assert directory not in granted and "/" not in granted
    if directory not in ("/tmp", "/var/tmp"):  # else PrivateTmp= gives it its own
        assert directory in [w.path for w in sb.withheld]


def test_a_file_named_after_the_service_is_not_a_directory_of_its_own() -> None:
    p = unit_profile("haproxy.service")
    touch(p, "/run/haproxy.pid", "write", fact=Fact("file", 0, 0, 0o644))
    sb = synth(p)
    [rw] = [s for s in sb.settings if s.directive == "ReadWritePaths"]
    assert rw.values == ["/run/haproxy.pid"] and "RuntimeDirectory" not in rw.evidence


@pytest.mark.parametrize(("path", "mounts"), [
    ("/run/lighttpd.pid", {}),  # /run: systemd's tmpfs on every host it boots
    ("/run/lighttpd.pid", {"/": "ext4", "/run": "tmpfs", "/srv": "ext4"}),
    ("/var/cache/lighttpd.pid", {"/": "ext4", "/var/cache": "tmpfs", "/srv": "ext4"}),
])
def test_a_file_it_creates_where_a_boot_empties_is_never_granted_alone(
        path: str, mounts: dict[str, str]) -> None:
    """Its grant would be skipped after the next boot (the file is missing) and the read-only
    directory would refuse the new one: haproxy, and lighttpd, which also removes its pid
    file at stop (its validation fell back to ProtectSystem=full). The file system is left
    writable as systemd leaves it, and the drop-in says so."""
    p = unit_profile("lighttpd.service")
    p.mounts.update(mounts)
    directory = os.path.dirname(path)
    touch(p, path, "create", "write", fact=Fact("file", 33, 33, 0o644))
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") is None
    [line] = withheld_lines(sb)
    assert f"--allow-write {directory} grants it" in line
    assert sb.values("ProtectSystem") == ["strict"]
    if mounts:  # the mount it writes in is not made read-only; the others are
        [ro] = sb.lines("ReadOnlyPaths")
        assert ro.values[0] == "-/srv"  # then /run's runtime configuration, if it is /run
        assert ro.values[1:] == ([] if directory != "/run" else RUN_CONFIG)
        assert f"left as systemd leaves it: {directory} (it writes {path} there)" in ro.evidence


@pytest.mark.parametrize("setting", ["PrivateTmp=false", "PrivateTmp=no"])
def test_a_unit_that_keeps_tmp_shared_keeps_it_writable_under_strict(setting: str) -> None:
    # Debian's mariadb.service sets PrivateTmp=false; its temporary tables go to /tmp. Kept
    # shared and not granted, strict made /tmp read-only: 8 restarts, then strict relaxed.
    p = unit_profile(unit_lines=[setting])
    touch(p, "/tmp/#sql-temptable-1.MAI", "create", "write", "delete")
    touch(p, "/var/tmp/own/data", "create", "write")
    touch(p, "/var/tmp/own", "mkdir", fact=Fact("dir", 0, 0, 0o755))
    sb = synth(p)
    text = verified(p, sb)
    assert sb.values("ProtectSystem") == ["strict"]
    assert sb.values("ReadWritePaths") == ["/tmp", "/var/tmp/own"]  # its own dir, not /var/tmp
    assert sb.values("PrivateTmp") is None and sb.withheld == []
    [why] = [o.why for o in sb.omitted if o.directive == "PrivateTmp"]
    assert why == f"/tmp is shared with other processes: the unit sets {setting}"
    assert f"granted because the unit sets {setting}" in " ".join(text.replace("#", " ").split())


def test_evidence_of_sharing_alone_never_grants_tmp() -> None:
    # the service read a file in /tmp it did not make: /tmp stays shared, but writing there
    # under strict is the user's call (--allow-write), not the traced service's
    p = unit_profile()
    touch(p, "/tmp/other-users-file", "read", fact=Fact("file", 1000, 1000, 0o644))
    touch(p, "/tmp/mine", "create", "write")
    sb = synth(p)
    assert sb.values("PrivateTmp") is None
    assert "/tmp" not in (sb.values("ReadWritePaths") or [])
    assert [w.path for w in sb.withheld] == ["/tmp"]


def test_a_log_file_logrotate_renames_is_granted_by_its_directory() -> None:
    """A file grant is a bind mount of that file: after logrotate renamed it, the service's
    namespace kept the rotated file writable and the new one read-only (exim4's mainlog,
    vsftpd's log: every login refused after the first rotation)."""
    p = unit_profile("exim4.service")
    touch(p, "/var/log/exim4/mainlog", "write", fact=Fact("file", 101, 4, 0o640))
    p.facts["/var/log/exim4"] = Fact("dir", 101, 4, 0o2750)
    p.rotated["/var/log/exim4/mainlog"] = "/etc/logrotate.d/exim4-base"
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") == ["/var/log/exim4"]
    [rw] = sb.lines("ReadWritePaths")
    assert "renamed by logrotate (/etc/logrotate.d/exim4-base)" in rw.evidence
    # not rotated (or by copytruncate, which keeps the file): the file alone, as before
    p.rotated.clear()
    assert synth(p).values("ReadWritePaths") == ["/var/log/exim4/mainlog"]


@pytest.mark.parametrize("kinds", [("write",), ("create", "write")])
def test_a_rotated_log_in_a_shared_directory_is_withheld_not_granted_alone(
        kinds: tuple[str, ...]) -> None:
    """Opened with O_CREAT (vsftpd, rsyslog) or not: granted alone, it broke at rotation."""
    p = unit_profile("vsftpd.service")
    touch(p, "/var/log/vsftpd.log", *kinds, fact=Fact("file", 0, 4, 0o640))
    p.rotated["/var/log/vsftpd.log"] = "/etc/logrotate.d/vsftpd"
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") is None
    [line] = withheld_lines(sb)
    assert "logrotate renames /var/log/vsftpd.log (/etc/logrotate.d/vsftpd)" in line
    assert "copytruncate" in line and "--allow-write /var/log grants it" in line
    assert synth(p, allow_write=["/var/log"]).values("ReadWritePaths") == ["/var/log"]
    # unrotated, it is rewritten in place: the file by itself, as before
    p.rotated.clear()
    missing_ok = "-" if "create" in kinds else ""
    assert synth(p).values("ReadWritePaths") == [f"{missing_ok}/var/log/vsftpd.log"]


def test_places_a_rename_crosses_are_one_mount() -> None:
    """Each ReadWritePaths= entry is a bind mount, and rename(2) between two mounts fails with
    EXDEV: postfix's qmgr under its learned drop-in, "rename from incoming to active: Invalid
    cross-device link", no mail delivered. Its spool is granted whole."""
    p = unit_profile("postfix@-.service")
    spool = "/var/spool/postfix"
    p.facts[spool] = Fact("dir", 0, 0, 0o755)
    for d in ("incoming", "active", "pid"):
        p.facts[f"{spool}/{d}"] = Fact("dir", 104, 0, 0o700)
    touch(p, f"{spool}/incoming/49E322D7B", "create", "write", "rename")
    touch(p, f"{spool}/active/49E322D7B", "rename", "delete")
    touch(p, f"{spool}/pid/master.pid", "create", "write", fact=Fact("file", 0, 0, 0o600))
    sb = synth(p)
    verified(p, sb)
    assert sb.values("ReadWritePaths") == [spool]
    [rw] = sb.lines("ReadWritePaths")
    assert "renamed between" in rw.evidence and "EXDEV" in rw.evidence
    # a Maildir: tmp/ -> new/
    m = unit_profile("mailer.service")
    box = "/srv/mail/u/Maildir"
    for d in ("tmp", "new"):
        m.facts[f"{box}/{d}"] = Fact("dir", 1000, 1000, 0o700)
    touch(m, f"{box}/tmp/1.host", "create", "write", "rename")
    touch(m, f"{box}/new/1.host", "rename")
    assert synth(m).values("ReadWritePaths") == [box]


def test_renames_in_places_whose_parent_is_shared_stay_two_entries() -> None:
    p = unit_profile("foo.service")
    for d in ("/var/lib/bar", "/var/cache/baz"):
        p.facts[d] = Fact("dir", 0, 0, 0o755)
    touch(p, "/var/lib/bar/state.new", "create", "write", "rename")
    touch(p, "/var/cache/baz/state", "rename")
    sb = synth(p)
    verified(p, sb)
    assert sorted(sb.values("ReadWritePaths") or []) == ["/var/cache/baz", "/var/lib/bar"]


def test_withheld_places_a_relaxed_protect_system_opens_are_named() -> None:
    """Validation that relaxes ProtectSystem=strict to full (seen with exim4, whose mail spool
    was withheld) leaves all of /var writable: the drop-in must not let "Withheld" read as
    "not writable". What full still mounts read-only (/etc) is not named."""
    p = unit_profile()
    touch(p, "/var/lib/dpkg/status", "write", fact=Fact("file", 0, 0, 0o644))
    touch(p, "/etc/cron.d/job", "create", "write", fact=Fact("file", 0, 0, 0o644))
    sb = synth(p)
    assert sorted(w.path for w in sb.withheld) == ["/etc/cron.d", "/var/lib/dpkg/status"]
    assert "writable all the same" not in sb.render()  # strict: withheld is read-only
    assert not any(w["writable_anyway"] for w in sb.to_json()["withheld"])  # type: ignore

    full, _ = relax_row(sb, "ProtectSystem", 3, "bisection")
    assert full.values("ProtectSystem") == ["full"]
    text = full.render().replace("\n# ", " ")  # comments wrap
    assert "Yet writable all the same under ProtectSystem=full (relaxed from strict): " \
        "/var/lib/dpkg/status" in text
    assert {w["path"]: w["writable_anyway"] for w in full.to_json()["withheld"]} == {  # type: ignore
        "/var/lib/dpkg/status": True, "/etc/cron.d": False}

    yes, _ = relax_row(full, "ProtectSystem", 4, "bisection")
    assert "under ProtectSystem=yes (relaxed from strict): /etc/cron.d, /var/lib/dpkg/status" \
        in yes.render().replace("\n# ", " ")
    unset, _ = relax_row(yes, "ProtectSystem", 5, "bisection")
    assert unset.values("ProtectSystem") is None
    assert "under ProtectSystem= unset (relaxed from strict): /etc/cron.d, " \
        "/var/lib/dpkg/status" in unset.render().replace("\n# ", " ")
