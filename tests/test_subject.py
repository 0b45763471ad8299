"""The profile's Subject (what was traced): typed, read from version 1 profiles as from
version 2, written without what it does not know, and refused in one line when malformed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from autosandbox.errors import UserError
from autosandbox.profile import PROFILE_VERSION, PrivilegedLine, Profile, Subject
from autosandbox.provenance import merge_profiles
from autosandbox.synth.subject import subject_of

UNIT_TEXT = "[Service]\nExecStart=/usr/bin/app\nStateDirectory=app\n"
# What `learn app.service` wrote as version 1 (trace/unit.py, learn.py, a user's manager):
# nulls for what it did not know, a `+` line described, a key this version does not know.
V1_UNIT: dict[str, Any] = {
    "version": 1,
    "subject": {
        "unit": "app.service", "uid": 1000, "user": None, "gid": 1000, "group": None,
        "dynamic_user": False, "type": "simple", "cwd": "/",
        "exec": [["ExecStartPre", "/bin/sh", "-c", "true"], ["ExecStart", "/usr/bin/app"]],
        "duration_s": 12.5, "manager": "user", "manager_uid": 1000, "manager_user": "alice",
        "manager_home": "/home/alice", "runs": 2, "partial": True,
        "privileged": [{"exec": "ExecStartPre", "path": "/bin/sh", "written": ["/etc/x"],
                        "written_count": 1, "capabilities": ["CAP_CHOWN"],
                        "families": []}],
        "unit_text": UNIT_TEXT, "kept": {"PrivateTmp": "yes"}, "note": {"by": "hand"},
    },
    "sources": ["strace"],
    "syscalls": {"read": 1},
}
V1_COMMAND: dict[str, Any] = {
    "version": 1,
    "subject": {"command": ["/bin/true", "-v"], "cwd": "/tmp", "uid": 0, "duration_s": 1.0,
                "exit_code": None, "host": "web1",
                "merged": [{"command": ["/bin/true", "-v"], "cwd": "/tmp", "uid": 0,
                            "exit_code": 0}]},
}


def _load(tmp_path: Path, data: dict[str, Any]) -> Profile:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return Profile.load(path)


def test_a_version_1_unit_profile_loads_typed(tmp_path: Path) -> None:
    s = _load(tmp_path, V1_UNIT).subject
    assert (s.unit, s.uid, s.gid, s.user, s.group, s.cwd) == ("app.service", 1000, 1000, None,
                                                              None, "/")
    assert (s.dynamic_user, s.unit_type, s.duration_s, s.runs, s.partial) == (
        False, "simple", 12.5, 2, True)
    assert s.exec_lines == [["ExecStartPre", "/bin/sh", "-c", "true"],
                            ["ExecStart", "/usr/bin/app"]]
    assert (s.manager, s.manager_uid, s.manager_user, s.manager_home) == (
        "user", 1000, "alice", "/home/alice")
    assert s.privileged == [PrivilegedLine("ExecStartPre", "/bin/sh", ["/etc/x"], 1,
                                           ["CAP_CHOWN"], [])]
    assert (s.unit_text, s.kept) == (UNIT_TEXT, {"PrivateTmp": "yes"})
    assert s.extra == {"note": {"by": "hand"}}  # not known here, not lost either
    view = subject_of(_load(tmp_path, V1_UNIT))  # synthesis reads it as before
    assert (view.service, view.user_manager, view.home) == ("app", True, "/home/alice")
    assert view.declared == {"StateDirectory": ["app"]}


def test_a_version_1_command_profile_and_its_merged_subjects_load(tmp_path: Path) -> None:
    s = _load(tmp_path, V1_COMMAND).subject
    assert (s.command, s.cwd, s.uid, s.exit_code, s.host) == (["/bin/true", "-v"], "/tmp", 0,
                                                              None, "web1")
    assert s.name == "/bin/true -v" and s.unit is None and s.extra == {}
    assert s.merged == [Subject(command=["/bin/true", "-v"], cwd="/tmp", uid=0, exit_code=0)]


def test_version_2_round_trips_and_leaves_out_defaults(tmp_path: Path) -> None:
    p = _load(tmp_path, V1_UNIT)
    p.save(tmp_path / "v2.json")
    data = json.loads((tmp_path / "v2.json").read_text())
    assert data["version"] == PROFILE_VERSION == 2
    assert "user" not in data["subject"] and "dynamic_user" not in data["subject"]
    assert data["subject"]["exec"][1] == ["ExecStart", "/usr/bin/app"]  # the keys of version 1
    assert data["subject"]["type"] == "simple" and data["subject"]["note"] == {"by": "hand"}
    again = Profile.load(tmp_path / "v2.json")
    assert again == p and again.subject == p.subject


def test_every_subject_field_round_trips() -> None:
    filled: dict[str, Any] = {
        "unit": "a@1.service", "command": ["x"], "cwd": "/", "uid": 1, "gid": 2, "user": "u",
        "group": "g", "dynamic_user": True, "unit_type": "notify",
        "exec_lines": [["ExecStart", "/x"]], "manager": "user", "manager_uid": 1,
        "manager_user": "u", "manager_home": "/home/u", "host": "h", "duration_s": 0.5,
        "exit_code": 3, "partial": True, "runs": 4, "instances": 5,
        "privileged": [PrivilegedLine("ExecStartPost", "/y")], "unit_text": "[Service]\n",
        "kept": {}, "merged": [Subject(unit="a@2.service")], "extra": {"z": [1]}}
    assert set(filled) == {f.name for f in dataclasses.fields(Subject)}  # none left untested
    s = Subject(**filled)
    assert Subject.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert Subject().to_json() == {}
    assert Subject(kept={}).to_json() == {"kept": {}}  # stored, and empty: not "not stored"


def test_merge_keeps_each_subject(tmp_path: Path) -> None:
    web1 = Profile(subject=Subject(unit="app.service", host="web1", uid=0))
    web2 = Profile(subject=Subject(unit="app.service", uid=999))
    merged = merge_profiles([("web1", web1), ("web2", web2)])
    assert [(s.host, s.uid) for s in merged.subject.merged] == [("web1", 0), (None, 999)]
    assert merged.subject.uid == 0 and merged.subject.merged[0].merged == []
    merged.save(tmp_path / "m.json")
    assert Profile.load(tmp_path / "m.json").subject == merged.subject
    p = Profile(subject=Subject(unit="app.service"))
    p.merge(Profile(subject=Subject(unit="other.service")))
    assert [s.unit for s in p.subject.merged] == ["other.service"]


@pytest.mark.parametrize(("subject", "what"), [
    ({"uid": "abc"}, "subject.uid: expected int, got 'abc'"),
    ({"uid": True}, "subject.uid: expected int"),
    ({"command": "/bin/true"}, "subject.command: expected list"),
    ({"kept": {"PrivateTmp": 1}}, r"subject.kept\['PrivateTmp'\]: expected str"),
    ({"kept": {"A\nB": 1}}, r"subject.kept\['A\\nB'\]: expected str"),  # one line
    ({"merged": [{"gid": []}]}, r"subject.merged\[0\].gid: expected int"),
    ({"privileged": [{"exec": "ExecStart"}]}, r"subject.privileged\[0\]: no .path."),
    (["app.service"], "subject: expected an object"),
])
def test_a_malformed_subject_is_one_line(tmp_path: Path, subject: Any, what: str) -> None:
    with pytest.raises(UserError, match=what) as err:
        _load(tmp_path, {"version": 1, "subject": subject})
    assert str(err.value).startswith("profile is malformed: ") and "\n" not in str(err.value)


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="version 3 is not supported"):
        _load(tmp_path, {"version": 3})
