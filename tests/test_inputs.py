"""Bad input: one line on stderr, exit 2, and nothing started (the CLI as a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autosandbox.durations import SETTLE_BOUNDS, TRACE_BOUNDS, parse_duration
from autosandbox.errors import UserError
from autosandbox.inputs import check_port, check_url
from autosandbox.profile import Profile, Subject


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autosandbox", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def one_line_error(cp: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = cp.stderr.splitlines()
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert len(lines) == 1 and lines[0].startswith("autosandbox: error: "), cp.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert cp.stdout == ""


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file the command would create if it were run: it must not be."""
    return tmp_path / "ran"


@pytest.mark.parametrize(("opts", "words"), [
    (["--duration", "99999999h"], ["out of range"]),
    (["--duration", ""], ["empty --duration"]),
    (["--duration", "0.0000001s"], ["out of range"]),
    (["--duration", "10 parsecs"], ["bad duration"]),
    (["--duration", "-5s"], ["bad duration"]),
    (["--settle", "0s"], ["--settle"]),
    (["--settle", "2h"], ["out of range"]),
    (["--max-trials", "0"], ["--max-trials"]),
    (["--max-trials", "many"], ["--max-trials"]),
    (["--systemd-version", "-1"], ["--systemd-version"]),
    (["--systemd-version", "100000"], ["--systemd-version"]),
    (["--health-url", "file:///etc/shadow"], ["only http"]),
    (["--health-url", "http://"], ["no host"]),
    (["--health-url", "http://localhost:99999/"], ["not a valid URL"]),
    (["--health-port", "99999"], ["1 to 65535"]),
    (["--health-port", "bad host!:80"], ["not a host name"]),
    (["--health-cmd", " "], ["--health-cmd is empty"]),
    (["--tracer", "quick"], ["--tracer"]),
    (["--no-such-option"], ["no such option"]),
])
def test_learn_refuses_bad_options_before_running(opts: list[str], words: list[str],
                                                  marker: Path) -> None:
    one_line_error(cli("learn", *opts, "--", "/usr/bin/touch", str(marker)), *words)
    assert not marker.exists()


def test_output_paths_are_checked_before_the_trace(tmp_path: Path, marker: Path) -> None:
    one_line_error(cli("learn", "-o", str(tmp_path), "--", "/usr/bin/touch", str(marker)),
                   "is a directory")
    one_line_error(cli("learn", "-o", str(tmp_path / "no" / "x.conf"), "--",
                       "/usr/bin/touch", str(marker)), "not a directory")
    one_line_error(cli("learn", "--profile-out", str(tmp_path), "--",
                       "/usr/bin/touch", str(marker)), "is a directory")
    assert not marker.exists()


@pytest.mark.parametrize(("argv", "error"), [
    (["learn", "usvc.service", "--user"], "--user needs -M USER@"),
    (["learn", "--user", "usvc.service"], "--user needs -M USER@"),
    (["learn", "usvc.service", "--user", "-M", "as-no-such-user@"], "no such user"),
    (["learn", "-M", "root@", "usvc.service"], "only with --user"),
    (["learn", "usvc.service", "-x"], "no such option"),
])
def test_unknown_options_are_options_wherever_they_stand(argv: list[str], error: str) -> None:
    """Not `command not found: usvc.service`: a unit name is never run as a command."""
    cp = cli(*argv)
    one_line_error(cp, error)
    assert "command not found" not in cp.stderr


def test_a_unit_and_a_command_are_not_mixed(marker: Path) -> None:
    one_line_error(cli("learn", "a.service", "b.service"), "one unit")
    one_line_error(cli("learn", "a.service", "--", "/usr/bin/touch", str(marker)),
                   "not both")
    one_line_error(cli("learn", "/usr/bin/touch", str(marker)), "after --")
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["validate", "bad name!.service", "/dev/null"],
    ["apply", "x.socket"],
    ["revert", "tmpl@.service"],
    ["diff", "../../etc/passwd.service"],
    ["reset", "x.timer"],
    ["reset"],
    ["reset", "a.service", "--all"],
])
def test_unit_names_are_checked_by_every_command(argv: list[str]) -> None:
    one_line_error(cli(*argv))


def test_input_files_must_be_readable_files(tmp_path: Path) -> None:
    one_line_error(cli("show", str(tmp_path)), "is a directory")
    one_line_error(cli("show", str(tmp_path / "missing.json")), "does not exist")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe not json")
    cp = cli("show", str(tmp_path / "bad.json"))
    assert cp.returncode == 2 and len(cp.stderr.splitlines()) == 1, cp.stderr
    one_line_error(cli("validate", "x.service", str(tmp_path)), "is a directory")
    one_line_error(cli("merge", "-o", str(tmp_path / "m.json"), str(tmp_path / "none.json")),
                   "does not exist")


def test_systemd_version_bounds_on_synthesize(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    Profile(subject=Subject(command=["/bin/true"], cwd="/", uid=0)).save(path)
    one_line_error(cli("synthesize", str(path), "--systemd-version", "-1"),
                   "--systemd-version")
    ok = cli("synthesize", str(path), "--systemd-version", "252")
    assert ok.returncode == 0, ok.stderr
    assert "ProtectSystem=strict" in ok.stdout


def test_unknown_command_is_one_line() -> None:
    one_line_error(cli("lern"), "No such command")


def test_duration_bounds() -> None:
    assert parse_duration("1h30m", bounds=TRACE_BOUNDS) == 5400
    assert parse_duration("1s", bounds=TRACE_BOUNDS) == TRACE_BOUNDS[0]
    assert parse_duration("31d", bounds=TRACE_BOUNDS) == TRACE_BOUNDS[1]
    for bad in ("0.5s", "32d", "9" * 400, "1e3s", "", " ", "s", "1h-5m"):
        with pytest.raises(UserError):
            parse_duration(bad, bounds=TRACE_BOUNDS)
    assert parse_duration("5s", bounds=SETTLE_BOUNDS) == 5
    with pytest.raises(UserError):
        parse_duration("500ms", bounds=SETTLE_BOUNDS)


def test_health_url_and_port() -> None:
    for good in ("http://127.0.0.1:8080/health", "https://example.org/", "http://[::1]:80/"):
        check_url(good)
    for bad in ("file:///etc/shadow", "ftp://x/", "http:///x", "http://a b/", "localhost:80",
                "http://x:0/", "javascript:alert(1)"):
        with pytest.raises(UserError):
            check_url(bad)
    for good in ("80", "localhost:8080", "127.0.0.1:1", "[::1]:65535", "my-host.lan:443"):
        check_port(good)
    for bad in ("0", "65536", "http", "host:", ":80x", "a;b:80", "-1"):
        with pytest.raises(UserError):
            check_port(bad)
