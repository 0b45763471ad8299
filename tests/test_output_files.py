"""Files the user names (-o, --profile-out, merge's output) are written as root, often in a
directory another user may write to: nothing planted there may redirect the write, and a file
replaced keeps its owner and mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from autosandbox.profile import Profile, Subject

NOBODY = 65534


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autosandbox", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def theirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A profile, a file of root's that must stay as it is, and a directory of another user's."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the other user's directory)")
    profile = tmp_path / "p.json"
    Profile(subject=Subject(command=["/bin/true"], cwd="/", uid=0)).save(profile)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    other = tmp_path / "theirs"
    other.mkdir()
    os.chown(other, NOBODY, NOBODY)
    return profile, victim, other


def test_a_symlink_planted_for_the_temporary_file_leads_nowhere(
        theirs: tuple[Path, Path, Path]) -> None:
    profile, victim, other = theirs
    for name in ("out.conf.tmp", ".out.conf.tmp", "m.json.tmp", ".m.json.tmp"):
        os.symlink(victim, other / name)
    out = _cli("synthesize", str(profile), "-o", str(other / "out.conf"))
    assert out.returncode == 0, out.stderr
    second = profile.with_name("q.json")
    second.write_bytes(profile.read_bytes())
    merged = _cli("merge", str(profile), str(second), "-o", str(other / "m.json"))
    assert merged.returncode == 0, merged.stderr
    assert victim.read_text() == "precious\n"
    assert "ProtectSystem=strict" in (other / "out.conf").read_text()
    assert Profile.load(other / "m.json").subject.command == ["/bin/true"]
    assert not (other / "out.conf").is_symlink() and not (other / "m.json").is_symlink()
    assert sorted(p.name for p in other.iterdir() if not p.is_symlink()) == ["m.json",
                                                                            "out.conf"]


def test_a_symlink_in_the_output_place_is_refused_in_one_line(
        theirs: tuple[Path, Path, Path]) -> None:
    profile, victim, other = theirs
    os.symlink(victim, other / "out.conf")
    cp = _cli("synthesize", str(profile), "-o", str(other / "out.conf"))
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert cp.stderr.strip().splitlines() == [
        f"autosandbox: error: cannot write {other / 'out.conf'}: it is a symbolic link "
        "(give a regular file's path)"]
    assert victim.read_text() == "precious\n" and (other / "out.conf").is_symlink()


def test_a_file_replaced_keeps_its_owner_and_mode(theirs: tuple[Path, Path, Path]) -> None:
    profile, _, other = theirs
    old = other / "out.conf"
    old.write_text("old\n")
    os.chown(old, NOBODY, NOBODY)
    os.chmod(old, 0o600)
    cp = _cli("synthesize", str(profile), "-o", str(old))
    assert cp.returncode == 0, cp.stderr
    st = old.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)
    assert "ProtectSystem=strict" in old.read_text()
    assert [p.name for p in other.iterdir()] == ["out.conf"]  # no temporary file left


def test_the_profile_never_replaces_the_file_our_output_goes_to(tmp_path: Path) -> None:
    """`learn -o x.conf --json > x.json`: the profile is x.json, which the shell had opened
    for the JSON; replacing it sent the JSON to a file no name led to (helper, named: the
    trials' record was lost). Refused before anything is traced."""
    out = tmp_path / "x.json"
    with out.open("w") as f:
        cp = subprocess.run([sys.executable, "-m", "autosandbox", "learn", "--duration", "2s",
                             "-o", str(tmp_path / "x.conf"), "--json", "--", "/bin/true"],
                            stdout=f, stderr=subprocess.PIPE, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    assert cp.returncode == 2, cp.stderr
    assert cp.stderr.strip().splitlines() == [
        f"autosandbox: error: cannot write {out}: it is where standard output goes (use "
        "another name, or --profile-out for the profile)"], cp.stderr
    assert out.read_text() == "" and not (tmp_path / "x.conf").exists()
