"""A unit's profile carries the unit as learned: `synthesize PROFILE` later scores it against
that unit and keeps its own settings, as `learn` did (not a throw-away /bin/true unit)."""

from __future__ import annotations

from pathlib import Path

from autosandbox.profile import Profile, Subject
from autosandbox.results import result_for_profile

UNIT = """[Unit]
Description=a unit with a sandbox of its own
[Service]
ExecStart=/usr/bin/python3 -m http.server
ProtectSystem=full
PrivateTmp=yes
NoNewPrivileges=yes
"""


def _profile(tmp_path: Path, **subject: object) -> Profile:
    p = Profile(subject=Subject.from_json({"unit": "web.service", **subject}))
    p.add_source("strace")
    p.syscalls.update({"read": 1, "write": 1, "openat": 1, "exit_group": 1})
    path = tmp_path / "web.profile.json"
    p.save(path)
    return Profile.load(path)  # through the JSON contract, as `synthesize PROFILE` reads it


def test_stored_unit_is_scored_and_kept(tmp_path: Path) -> None:
    bare = result_for_profile(_profile(tmp_path))
    learned = result_for_profile(_profile(tmp_path, unit_text=UNIT,
                                          kept={"ProtectSystem": "full"}))
    assert bare.before is not None and learned.before is not None
    assert learned.unit_text == UNIT
    # the unit's own ProtectSystem/PrivateTmp/NoNewPrivileges count before the drop-in
    assert learned.before.exposure < bare.before.exposure
    assert "ProtectSystem=strict" in learned.dropin  # tightening what the unit set is allowed
