"""The contracts synthesis hands on (synth/model.py): a Sandbox is a pure function of a
profile and a target, and it is frozen: relaxing one returns a new one, and the candidate a
trial ran with stays as it was."""

from __future__ import annotations

import builtins
import dataclasses
import os
import subprocess
from pathlib import Path
from typing import cast

import pytest

from autosandbox.profile import Fact
from autosandbox.synth.grants import Evidence
from autosandbox.synth.model import Denial, Omission, Sandbox, Setting
from autosandbox.synth.synthesize import synthesize
from autosandbox.synth.target import Target
from autosandbox.validate.candidate import parse_candidate
from autosandbox.validate.health import Health
from autosandbox.validate.relax import relax_by_evidence, relax_disk, relax_row, subset
from autosandbox.validate.snapshot import Change, Entry
from autosandbox.validate.trials import DenialKey, Trial, _loop, _Run
from tests.synth_profiles import served, touch, unit_profile

TARGET = Target(252, frozenset({"SECCOMP", "BPF_FRAMEWORK"}))  # no syscall groups: no host


def test_synthesis_from_a_hand_built_profile_asks_the_host_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def recorder(name: str) -> object:
        def ask(*args: object, **kwargs: object) -> object:
            asked.append(f"{name}{args[:1]}")
            raise AssertionError(f"{name} asked the host")
        return ask

    p = unit_profile("webd.service", uid=4321, gid=4321, unit_lines=["User=webd"])
    touch(p, "/var/lib/webd/db", "create", "write")
    p.facts["/var/lib/webd"] = Fact("dir", 4321, 4321, 0o755)
    touch(p, "/srv/webd/upload/x", "create", "write")
    p.facts["/srv/webd/upload"] = Fact("dir", 4321, 4321, 0o755)
    served(p, "0.0.0.0", 8080)
    for name, owner in (("stat", os), ("lstat", os), ("scandir", os), ("listdir", os),
                        ("readlink", os), ("open", builtins), ("Popen", subprocess)):
        monkeypatch.setattr(owner, name, recorder(name))
    sb = synthesize(p, TARGET)
    monkeypatch.undo()
    assert asked == []
    assert sb.values("ProtectSystem") == ["strict"]
    assert sb.values("StateDirectory") == ["webd"]
    assert sb.values("ReadWritePaths") == ["/srv/webd/upload"]
    assert sb.values("RestrictAddressFamilies") == ["AF_INET"]
    assert sb.values("SocketBindAllow") == ["tcp:8080"]
    assert "SystemCallFilter" in {o.directive for o in sb.omitted}  # no groups by hand
    assert isinstance(sb.settings, tuple) and isinstance(sb.omitted, tuple)


def test_syscall_filter_from_groups_given_by_hand_asks_the_host_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The target carries @system-service's parts: SystemCallFilter= needs no systemd-analyze
    (before: synthesis ran it on the host whatever target it was given)."""
    groups = {"@basic-io": frozenset({"read", "write", "close"}),
              "@network-io": frozenset({"sendto", "recvfrom"}),
              "@default": frozenset({"exit_group"}),
              "@chown": frozenset({"chown"}), "@setuid": frozenset({"setuid"}),
              "@privileged": frozenset({"chown", "setuid"}),
              "@system-service": frozenset({"read", "write", "close", "sendto", "recvfrom",
                                            "exit_group", "uname", "chown", "setuid",
                                            "userfaultfd"})}
    target = Target(252, frozenset({"SECCOMP"}), groups,
                    service_parts=("@basic-io", "@chown", "@default", "@network-io",
                                   "@setuid", "uname", "userfaultfd"))
    p = unit_profile("webd.service", uid=4321, gid=4321, unit_lines=["User=webd"])
    p.syscalls.update({"read": 3, "close": 1, "exit_group": 1, "chown": 1})

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"the host was asked: {args[:1]}")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    sb = synthesize(p, target)
    monkeypatch.undo()
    # Seen parts; unseen ones only where systemd-analyze security scores none of their calls
    # (@network-io, uname: refusing them tightened nothing it measures, and a missed code path
    # failed with EPERM), or where they act on nothing but the service's own without a
    # capability the bounding set withholds (@setuid: no CAP_SETUID, CAP_SETGID); userfaultfd
    # stays out.
    assert sb.values("SystemCallFilter") == ["@basic-io", "@chown", "@default", "@network-io",
                                             "@setuid", "uname"]
    [line] = sb.lines("SystemCallFilter")
    assert "@setuid unseen, allowed: without CAP_SETUID, CAP_SETGID" in line.evidence
    # with one of them in the bounding set, an unseen @setuid could act: it stays out
    p.add_cap("CAP_SETGID", "setgroups(1, [4321]) as root")
    assert "@setuid" not in (synthesize(p, target).values("SystemCallFilter") or [])


def test_the_contracts_are_frozen() -> None:
    sb = parse_candidate("[Service]\nProtectSystem=strict\n", "x.service")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sb.settings[0].evidence = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sb.settings = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Omission("X", "why").why = "other"  # type: ignore[misc]
    assert sb.omitting(Omission("X", "why")).omitted == (Omission("X", "why"),)
    assert sb.omitted == ()


CANDIDATE = ("[Service]\nProtectSystem=strict\nProtectHome=yes\nPrivateDevices=yes\n"
             "StateDirectory=demo\nUMask=0077\nRestrictAddressFamilies=AF_UNIX\n"
             "RestrictAddressFamilies=AF_INET\nCapabilityBoundingSet=\n"
             "SystemCallFilter=@system-service\nSystemCallErrorNumber=EPERM\n")


def _frozen_copy(sb: Sandbox) -> tuple[list[tuple[str, list[str], str]], list[Omission], str]:
    return ([(s.directive, list(s.values), s.evidence) for s in sb.settings],
            list(sb.omitted), sb.render(header=False))


def test_relaxing_leaves_the_candidate_it_was_given_as_it_was(tmp_path: Path) -> None:
    sb = parse_candidate(CANDIDATE, "demo.service")
    before = _frozen_copy(sb)
    denials = [
        Denial("eafnosupport", None, "journal", "socket: Address family not supported",
               family="AF_INET6"),  # a family added to both lines
        Denial("eperm", None, "audit", "kill() = EPERM", "kill", uid=0),  # a capability
        Denial("eacces", "/root/.config/app.ini", "audit", "openat() = EACCES", "openat"),
        Denial("eacces", "/dev/ttyS0", "journal", "open /dev/ttyS0: Permission denied"),
        Denial("erofs", f"{tmp_path}/spool", "journal", "open: Read-only file system"),
    ]
    relaxed, done = relax_by_evidence(sb, denials, 2, Evidence())
    assert [r.directive for r in done] == ["RestrictAddressFamilies", "CapabilityBoundingSet",
                                           "ProtectHome", "PrivateDevices", "ReadWritePaths"]
    assert relaxed.values("RestrictAddressFamilies") == ["AF_INET", "AF_INET6", "AF_UNIX"] * 2
    assert relaxed.values("CapabilityBoundingSet") == ["CAP_KILL"]
    assert relaxed.values("ReadWritePaths") == [str(tmp_path)]
    assert _frozen_copy(sb) == before
    for row in ("ProtectSystem", "SystemCallFilter", "UMask"):
        after, rel = relax_row(sb, row, 3, "bisection")
        assert rel is not None and after.values(row) != sb.values(row)
        assert _frozen_copy(sb) == before
    chowned = Change("/var/lib/demo", Entry("dir", 65534, 65534, 0o700),
                     Entry("dir", 0, 0, 0o755))
    after, done = relax_disk(sb, [chowned], 4, Evidence())
    assert after.values("StateDirectory") is None and done
    assert _frozen_copy(sb) == before
    assert subset(sb, {"ProtectHome"}).values("ProtectSystem") is None
    assert _frozen_copy(sb) == before


def test_a_setting_keeps_its_place_when_relaxed() -> None:
    sb = parse_candidate(CANDIDATE, "demo.service")
    after, _ = relax_row(sb, "ProtectHome", 3, "bisection")
    assert [s.directive for s in after.settings] == [s.directive for s in sb.settings]
    assert after.settings[1] == Setting("ProtectHome", ["read-only"],
                                        "from the candidate file. Relaxed in trial 3 from "
                                        "yes: bisection")


@pytest.mark.parametrize("learned", ["", "CAP_NET_BIND_SERVICE"])
def test_a_blamed_bounding_set_is_widened_by_roots_own_acts_before_it_goes(learned: str) -> None:
    """exim4: a capability no denial named (a chmod of a file it gave away) made bisection
    leave the set unset: every capability, CAP_SYS_ADMIN among them. First the checks root
    makes on other users' files and processes; only then nothing."""
    sb = parse_candidate(f"[Service]\nProtectSystem=strict\nCapabilityBoundingSet={learned}\n",
                         "demo.service")
    wider, rel = relax_row(sb, "CapabilityBoundingSet", 3, "bisection")
    caps = wider.values("CapabilityBoundingSet") or []
    assert rel is not None and {"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"} <= set(caps)
    assert set(learned.split()) <= set(caps) and "CAP_SYS_ADMIN" not in caps
    assert rel.after == " ".join(caps)
    gone, rel = relax_row(wider, "CapabilityBoundingSet", 4, "bisection")
    assert gone.values("CapabilityBoundingSet") is None and rel is not None
    assert rel.after == "(unset)"


class _FakeRun:
    """The trial loop's view of a unit (validate/trials.py _Run), judged by the candidate it
    is given: a denial under ProtectHome=yes, a silent failure under PrivateDevices=yes."""

    def __init__(self) -> None:
        self.trials: list[Trial] = []
        self.ran: list[Sandbox] = []
        self.may_be_root = True
        self.allow_write: tuple[str, ...] = ()
        self.noise_denials: set[DenialKey] = set()
        self.rotated: dict[str, str] = {}

    def say(self, text: str) -> None:
        pass

    def trial(self, sb: Sandbox, rows: list[str] | None, kind: str) -> Trial:
        self.ran.append(sb)
        denials = ([Denial("eacces", "/root/.app", "journal", "open /root/.app: Permission "
                           "denied")] if sb.values("ProtectHome") == ["yes"] else [])
        healthy = not denials and sb.values("PrivateDevices") is None
        t = Trial(len(self.trials) + 1, kind, rows, Health(healthy, [] if healthy else ["x"]),
                  denials)
        self.trials.append(t)
        return t


def test_the_trial_loop_goes_on_with_the_relaxed_candidate() -> None:
    sb = parse_candidate("[Service]\nProtectSystem=strict\nProtectHome=yes\n"
                         "PrivateDevices=yes\n", "demo.service")
    before = _frozen_copy(sb)
    run = _FakeRun()
    v = _loop(cast("_Run", run), sb, 12)
    assert v.healthy
    # a denial relaxes; a silent failure is bisected (ProtectSystem last), then healthy
    assert [t.kind for t in run.trials] == ["candidate", "candidate", "bisect", "bisect",
                                            "candidate"]
    assert [r.directive for t in run.trials for r in t.relaxed] == ["ProtectHome",
                                                                     "PrivateDevices"]
    assert v.sandbox.values("ProtectHome") == ["read-only"]
    assert v.sandbox.values("PrivateDevices") is None
    assert run.ran[-1] is v.sandbox
    assert _frozen_copy(sb) == before and run.ran[0] is sb


class _GrantsBreakRun(_FakeRun):
    """A unit that renames between two granted places (two mounts: EXDEV): any drop-in that
    holds both entries fails, whatever restrictions it sets."""

    def trial(self, sb: Sandbox, rows: list[str] | None, kind: str) -> Trial:
        self.ran.append(sb)
        healthy = sb.values("ReadWritePaths") is None
        t = Trial(len(self.trials) + 1, kind, rows, Health(healthy, [] if healthy else [
            "rename from incoming to active: Invalid cross-device link"]), [])
        self.trials.append(t)
        return t


def test_bisection_does_not_blame_a_row_for_what_the_grants_break() -> None:
    """Each subset keeps the grants: the empty prefix is not the unit as found. Before the
    first row is blamed, the grants alone are tried (postfix: ProtectHome= was blamed twice,
    then PrivateTmp=, and relaxed for nothing)."""
    sb = parse_candidate("[Service]\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\n"
                         "ReadWritePaths=/var/spool/postfix/incoming "
                         "/var/spool/postfix/active\n", "postfix.service")
    run = _GrantsBreakRun()
    v = _loop(cast("_Run", run), sb, 12)
    assert not v.healthy
    assert [t.kind for t in run.trials] == ["candidate", "bisect", "bisect"]
    assert run.trials[-1].rows == [] and "grants alone" in run.trials[-1].line()
    assert [r for t in run.trials for r in t.relaxed] == []  # no row relaxed for nothing
    assert v.sandbox.values("ProtectHome") == ["yes"]
    assert any("breaks with the grants alone" in n for n in v.notes)


def test_a_row_is_still_blamed_when_the_grants_alone_work() -> None:
    sb = parse_candidate("[Service]\nProtectSystem=strict\nProtectHome=yes\nPrivateDevices=yes\n"
                         "ReadWritePaths=/srv/app\n", "demo.service")
    run = _FakeRun()
    v = _loop(cast("_Run", run), sb, 12)
    assert v.healthy and v.sandbox.values("PrivateDevices") is None
    assert v.sandbox.values("ReadWritePaths") == ["/srv/app"]
