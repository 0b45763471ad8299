"""What `reset` brings a unit back to after a killed run: the state the earliest run found."""

from pathlib import Path

from autosandbox.systemd.runstate import Run, found_running


def _run(start: int, *entries: dict[str, object]) -> Run:
    return Run(Path(f"/nonexistent/{start}.jsonl"), 100 + start, start, "a.service",
               [dict(e) for e in entries])


def test_the_first_record_of_the_unit_wins_over_later_ones() -> None:
    # a trace found it running, then had it stopped: the kill came while it was stopped
    run = _run(5, {"kind": "unit", "name": "a.service", "was_running": True},
               {"kind": "changed", "unit": "a.service", "was_running": False})
    assert found_running([run], "a.service") is True


def test_a_validate_run_records_through_the_manager() -> None:
    run = _run(5, {"kind": "changed", "unit": "a.service", "was_running": False})
    assert found_running([run], "a.service") is False


def test_the_earliest_run_is_the_state_as_found() -> None:
    # a second run started on a unit the first (killed) one had left stopped
    first = _run(3, {"kind": "changed", "unit": "a.service", "was_running": True})
    second = _run(9, {"kind": "changed", "unit": "a.service", "was_running": False})
    assert found_running([second, first], "a.service") is True


def test_other_units_and_old_records_say_nothing() -> None:
    run = _run(5, {"kind": "changed", "unit": "b.service", "was_running": False},
               {"kind": "changed", "unit": "a.service"},  # recorded by an older version
               {"kind": "dropin", "path": "/run/systemd/system/a.service.d/x.conf"})
    assert found_running([run], "a.service") is None


def test_the_disk_as_found_survives_the_run_and_is_put_back(tmp_path: Path) -> None:
    from autosandbox.validate.snapshot import Snapshot, restore

    kept, noisy = tmp_path / "kept", tmp_path / "noisy"
    kept.write_text("x")
    noisy.write_text("y")
    kept.chmod(0o640)
    noisy.chmod(0o640)
    before = Snapshot.take([str(kept), str(noisy)])
    before.save(tmp_path / "disk.json", frozenset({str(noisy)}))  # the unit changes it itself
    kept.chmod(0o666)
    noisy.chmod(0o600)
    loaded = Snapshot.load(tmp_path / "disk.json")
    changes = loaded.changes(loaded.again())
    assert [c.line() for c in changes] == [f"{kept}: mode 0640 -> 0666"]
    assert restore(changes) == []
    assert kept.stat().st_mode & 0o777 == 0o640 and noisy.stat().st_mode & 0o777 == 0o600


def test_an_unfinished_apply_puts_back_the_mode_and_owner_as_found(tmp_path: Path) -> None:
    """A drop-in holding secrets at 0640 root:adm comes back so, not 0644."""
    import os

    from autosandbox.systemd.dropins import file_attrs
    from autosandbox.systemd.runstate import _undo_apply

    target, saved = tmp_path / "50-autosandbox.conf", tmp_path / "apply-before.conf"
    target.write_bytes(b"[Service]\nEnvironment=TOKEN=s3cret\n")
    os.chown(target, os.geteuid(), 4 if os.geteuid() == 0 else os.getegid())
    target.chmod(0o640)
    found = file_attrs(target)
    saved.write_bytes(target.read_bytes())
    target.write_bytes(b"[Service]\nProtectSystem=strict\n")  # what apply put there
    target.chmod(0o644)
    assert _undo_apply({"kind": "apply", "target": str(target), "before": str(saved),
                        **found}) != []
    assert target.read_bytes() == saved.read_bytes()
    assert file_attrs(target) == found


def test_a_file_written_like_another_keeps_its_mode_and_owner(tmp_path: Path) -> None:
    import os

    from autosandbox.systemd.dropins import file_attrs, write_like

    path = tmp_path / "previous.conf"
    attrs = {"mode": 0o600, "uid": os.geteuid(), "gid": 4 if os.geteuid() == 0 else os.getegid()}
    write_like(path, b"x", attrs)
    assert file_attrs(path) == attrs
    write_like(path, b"y", None)  # a record of an older version: the default
    assert file_attrs(path)["mode"] == 0o644


def test_a_killed_revert_is_finished_with_the_file_as_found(tmp_path: Path) -> None:
    import os

    from autosandbox.systemd.dropins import file_attrs
    from autosandbox.systemd.runstate import _finish_revert

    target, saved = tmp_path / "50-autosandbox.conf", tmp_path / "revert-previous.conf"
    saved.write_bytes(b"[Service]\nEnvironment=TOKEN=s3cret\n")
    attrs = {"mode": 0o640, "uid": os.geteuid(),
             "gid": 4 if os.geteuid() == 0 else os.getegid()}
    target.write_bytes(b"[Service]\nProtectHome=yes\n")  # ours: killed before the restore
    done = _finish_revert({"kind": "revert", "target": str(target), "state": str(tmp_path),
                           "had_previous": True, "previous": str(saved), "attrs": attrs})
    assert done and "revert did not finish" in done[0]
    assert target.read_bytes() == saved.read_bytes() and file_attrs(target) == attrs
    # none was there before ours: ours goes, and so does the directory it made
    made = tmp_path / "a.service.d"
    ours = made / "50-autosandbox.conf"
    made.mkdir()
    ours.write_text("[Service]\nProtectHome=yes\n")
    assert _finish_revert({"kind": "revert", "target": str(ours), "state": str(tmp_path),
                           "had_previous": False, "created": [str(made)]}) != []
    assert not made.exists()
