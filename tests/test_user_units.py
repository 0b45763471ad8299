"""Units of a user's service manager (issue #16), the pure parts: what synthesis writes for a
user's manager (catalogue data), the user's home as its own place, and where our drop-ins and
state go for each manager. The real manager is exercised in integration/test_user_units.py."""

from __future__ import annotations

import pwd
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autosandbox.errors import UserError
from autosandbox.profile import Fact, Profile
from autosandbox.synth.catalogue import CATALOGUE, USER_NS
from autosandbox.synth.model import Sandbox
from autosandbox.synth.sensitive import withheld
from autosandbox.systemd import dropins
from autosandbox.systemd.manager import (
    SYSTEM,
    Scope,
    check_learnable_name,
    check_unit_name,
    current_scope,
    use_scope,
    user_scope,
)

from .synth_profiles import served, synth, touch, unit_profile

ALICE = Scope(1000, "alice", 1000, "/home/alice")
USER_SUBJECT: dict[str, Any] = {"manager": "user", "manager_uid": 1000,
                                "manager_user": "alice", "manager_home": "/home/alice"}


@pytest.fixture
def alice() -> Iterator[Scope]:
    use_scope(ALICE)
    try:
        yield ALICE
    finally:
        use_scope(SYSTEM)


def _user_profile() -> tuple[Profile, Sandbox]:
    p = unit_profile("web.service", uid=1000, gid=1000)
    p.subject = replace(p.subject, **USER_SUBJECT)
    served(p, "127.0.0.1", 8080)
    home = Fact("dir", 1000, 1000, 0o755)
    touch(p, "/home/alice/www/started", "write", "create", fact=Fact("file", 1000, 1000, 0o600))
    for d in ("/home/alice", "/home/alice/www"):
        p.facts[d] = home
    return p, synth(p)


def test_a_user_managers_sandbox_has_only_what_applies_there() -> None:
    _, sb = _user_profile()
    written = {s.directive for s in sb.settings}
    left_out = {o.directive: o.why for o in sb.omitted}
    assert "PrivateUsers" in written and "ProtectSystem" in written
    for d in CATALOGUE:
        if d.user not in ("yes", USER_NS, "only"):
            assert d.name not in written, d.name
            assert left_out[d.name].startswith("not for a user's manager"), d.name
    assert "CAP_SETPCAP" in left_out["CapabilityBoundingSet"]
    # its own home is its own place: the directory it wrote is granted, not withheld
    assert sb.values("ReadWritePaths") == ["/home/alice/www"]
    assert sb.withheld == []


def test_a_system_service_gets_no_private_users_and_no_new_lines() -> None:
    p = unit_profile("web.service")
    served(p, "127.0.0.1", 8080)
    sb = synth(p)
    assert sb.values("PrivateUsers") is None
    assert not any(o.directive == "PrivateUsers" for o in sb.omitted)
    assert not any("user's manager" in o.why for o in sb.omitted)
    assert sb.values("CapabilityBoundingSet") == []


def test_every_row_says_what_it_does_in_a_user_manager() -> None:
    for d in CATALOGUE:
        assert d.user in ("yes", USER_NS, "only") or len(d.user) > 20, d.name
    # namespaces and capability drops are what an unprivileged manager cannot do alone
    needs = {d.name for d in CATALOGUE if d.user == USER_NS}
    assert {"ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateDevices",
            "PrivateNetwork"} <= needs


def test_the_home_of_the_manager_user_is_its_own_place_but_for_what_runs_code() -> None:
    home = "/home/alice"
    assert withheld("/home/alice/www", home=home) is None
    assert withheld("/home/alice/.local/state/app/db", home=home) is None
    assert withheld("/home/alice", home=home) is not None
    assert "~/.ssh" in str(withheld("/home/alice/.ssh/authorized_keys", home=home))
    assert "~/.config/systemd" in str(withheld("/home/alice/.config/systemd/user/x.service",
                                               home=home))
    assert withheld("/home/alice/.bashrc", home=home) is not None
    assert withheld("/home/bob/www", home=home) is not None  # another user's home
    assert withheld("/home/alice/www") is not None  # a system service: homes are withheld
    assert withheld("/home/alice/.ssh/x", ["/home/alice/.ssh"], home=home) is None  # named


def test_each_manager_has_its_own_places(alice: Scope) -> None:
    assert dropins.dropin_path("web.service", "zz.conf") == Path(
        "/run/user/1000/systemd/user/web.service.d/zz.conf")
    assert dropins.dropin_path("web.service", "50.conf", runtime=False) == Path(
        "/home/alice/.config/systemd/user/web.service.d/50.conf")
    assert dropins.state_dir_of("web.service").name == "web.service~user-1000"
    assert alice.journal_match("web.service") == ["_UID=1000",
                                                  "_SYSTEMD_USER_UNIT=web.service"]
    use_scope(SYSTEM)
    assert dropins.dropin_path("web.service", "zz.conf") == Path(
        "/run/systemd/system/web.service.d/zz.conf")
    assert dropins.state_dir_of("web.service").name == "web.service"
    assert SYSTEM.journal_match("web.service") == ["-u", "web.service"]


def test_refused_in_a_user_manager(alice: Scope) -> None:
    with pytest.raises(UserError, match="user manager itself"):
        check_unit_name("user@1000.service")
    with pytest.raises(UserError, match="not a service"):
        check_learnable_name("web.socket")
    check_learnable_name("web.service")
    with pytest.raises(UserError, match="USER@"):
        user_scope("alice")
    with pytest.raises(UserError, match="another machine"):
        user_scope("alice@otherhost")
    with pytest.raises(UserError, match="root's user manager"):
        user_scope("root@")
    with pytest.raises(UserError, match="no such user"):
        user_scope("autosandbox-no-such-user@")
    nobody = pwd.getpwnam("nobody")
    by_name, by_uid = user_scope("nobody@"), user_scope(f"{nobody.pw_uid}@.host")
    assert by_name == by_uid == Scope(nobody.pw_uid, "nobody", nobody.pw_gid, nobody.pw_dir)


def test_the_directories_writing_creates_are_removed_with_it(tmp_path: Path) -> None:
    assert current_scope() is SYSTEM
    target = tmp_path / "a" / "b" / "x.service.d" / "50.conf"
    made = dropins.missing_dirs(target)
    assert made == [str(tmp_path / "a"), str(tmp_path / "a/b"), str(tmp_path / "a/b/x.service.d")]
    dropins.write_file(target, b"[Service]\n")
    assert target.read_bytes() == b"[Service]\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    (tmp_path / "a" / "keep").write_text("")  # someone else's file: its directory stays
    assert dropins.remove_file(target, made)
    assert not (tmp_path / "a/b").exists() and (tmp_path / "a" / "keep").exists()
    assert not dropins.remove_file(target, made)


def test_a_user_unit_is_scored_as_its_manager_scores_it() -> None:
    from autosandbox.results import result_for_profile

    p, _ = _user_profile()
    user = result_for_profile(p)
    p.subject = replace(p.subject, manager="system")  # the same file, scored as a system unit
    system = result_for_profile(p)
    assert user.before is not None and user.after is not None and system.after is not None
    assert user.after.exposure < user.before.exposure
    assert user.after.exposure != system.after.exposure  # --user scores differently
