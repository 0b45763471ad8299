"""Units of a user's service manager (issue #16): `learn/apply/revert --user -M USER@` against
a real `systemd --user` (lingering user made by the test, removed after). The drop-ins go to
the user's own unit directories and leave them as found; other units of the user are not
touched; what cannot work is refused in one line before anything changes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from systemd_harness import run
from test_learn import autosandbox, spawn_learn

USER = "as-uu"
PORT = 8766
SERVICE = "as-usvc.service"
OTHER = "as-uother.service"
QUICK = ("--duration", "4s", "--settle", "1s", "--max-trials", "8", "--json", "-q")


@dataclass
class UserManager:
    name: str
    uid: int
    gid: int
    home: Path

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                    "env", f"XDG_RUNTIME_DIR=/run/user/{self.uid}", "systemctl", "--user",
                    *args])

    def prop(self, unit: str, name: str) -> str:
        return self.ctl("show", "-p", name, "--value", unit).stdout.strip()

    @property
    def runtime_units(self) -> Path:
        return Path(f"/run/user/{self.uid}/systemd/user")


def _tree(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path below `roots` (the roots too): owner, group, mode."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for p in [root, *root.rglob("*")]:
            st = p.lstat()
            out[str(p)] = (st.st_uid, st.st_gid, st.st_mode)
    return out


def _wait(pred, limit: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit * max(1.0, os.getloadavg()[0] / 2)
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bool(r.status < 400)
    except OSError:
        return False


@pytest.fixture
def um() -> Iterator[UserManager]:
    run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
    pw = pwd.getpwnam(USER)
    m = UserManager(USER, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    try:
        run(["loginctl", "enable-linger", USER], check=True)
        assert _wait(lambda: Path(f"/run/user/{m.uid}/systemd/private").exists())
        units = m.home / ".config/systemd/user"
        (m.home / "www").mkdir()
        (m.home / "www/index.html").write_text("hello\n")
        units.mkdir(parents=True)
        (units / SERVICE).write_text(
            "[Service]\n"
            "ExecStart=/bin/sh -c 'date > %h/www/started; exec python3 -m http.server "
            f"{PORT} --bind 127.0.0.1 --directory %h/www'\n")
        (units / OTHER).write_text("[Service]\nExecStart=/bin/sleep infinity\n")
        # a per-connection socket of the user's (never started: only refused)
        (units / "as-uecho.socket").write_text(
            f"[Socket]\nListenStream=127.0.0.1:{PORT + 1}\nAccept=yes\n")
        (units / "as-uecho@.service").write_text(
            "[Service]\nExecStart=/bin/cat\nStandardInput=socket\n")
        run(["chown", "-R", f"{USER}:{USER}", str(m.home)], check=True)
        assert m.ctl("daemon-reload").returncode == 0
        assert m.ctl("start", SERVICE, OTHER).returncode == 0
        assert _wait(lambda: _get(f"http://127.0.0.1:{PORT}/"))
        yield m
    finally:
        run(["loginctl", "disable-linger", USER])
        run(["systemctl", "stop", f"user@{m.uid}.service"])
        run(["userdel", "-r", "-f", USER])
        for d in Path("/var/lib/autosandbox").glob(f"*~user-{m.uid}"):
            shutil.rmtree(d, ignore_errors=True)


def test_learn_apply_revert_a_user_service(um: UserManager) -> None:
    as_user = ("--user", "-M", f"{USER}@")
    other_id = um.prop(OTHER, "InvocationID")
    before = _tree(um.home / ".config", um.runtime_units)
    url = f"http://127.0.0.1:{PORT}/"
    cp = autosandbox("learn", *as_user, SERVICE, *QUICK, "--exercise", f"curl -fsS {url}",
                     "--health-url", url)
    if cp.returncode != 0:
        print(cp.stdout, cp.stderr)  # what was learned and each trial, for the failure
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["validated"], (out["notes"], out["dropin"])
    dropin = out["dropin"]
    assert "PrivateUsers=yes" in dropin and "ProtectSystem=strict" in dropin, dropin
    assert "CapabilityBoundingSet=: not for a user's manager" in dropin, dropin
    assert um.prop(SERVICE, "ActiveState") == "active" and _wait(lambda: _get(url))
    assert _tree(um.home / ".config", um.runtime_units) == before  # nothing of ours left
    assert not um.runtime_units.exists()
    assert um.prop(OTHER, "InvocationID") == other_id  # untouched
    # the system's units of that name are not ours: the learned drop-in is the user's
    assert Path(f"/var/lib/autosandbox/{SERVICE}~user-{um.uid}/learned.conf").is_file()
    assert not Path(f"/var/lib/autosandbox/{SERVICE}").exists()

    cp = autosandbox("apply", *as_user, SERVICE, "--settle", "1s", "--health-url", url)
    assert cp.returncode == 0, cp.stderr
    installed = um.home / ".config/systemd/user" / f"{SERVICE}.d" / "50-autosandbox.conf"
    st = installed.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (um.uid, um.gid, 0o644)
    assert installed.parent.stat().st_uid == um.uid
    assert str(installed) in um.prop(SERVICE, "DropInPaths")
    assert um.prop(SERVICE, "PrivateUsers") == "yes"
    assert um.prop(SERVICE, "ActiveState") == "active" and _wait(lambda: _get(url))
    assert um.prop(OTHER, "InvocationID") == other_id

    cp = autosandbox("revert", *as_user, SERVICE)
    assert cp.returncode == 0, cp.stderr
    assert not installed.parent.exists()
    assert _tree(um.home / ".config", um.runtime_units) == before
    assert um.prop(SERVICE, "PrivateUsers") == "no"
    assert um.prop(SERVICE, "ActiveState") == "active" and _wait(lambda: _get(url))
    assert um.prop(OTHER, "InvocationID") == other_id


def test_a_killed_learn_is_reset_in_the_users_manager(um: UserManager) -> None:
    """SIGKILL mid-trace, then `reset --user -M USER@`: the trace drop-in and the directories
    it needed are gone, the unit runs untraced again, the user's other units untouched."""
    other_id = um.prop(OTHER, "InvocationID")
    before = _tree(um.home / ".config", um.runtime_units)
    trace = um.runtime_units / f"{SERVICE}.d" / "zz-autosandbox-trace.conf"
    proc = spawn_learn("--user", "-M", f"{USER}@", SERVICE, "--duration", "60s", "-q",
                       "--no-validate")
    try:
        assert _wait(lambda: trace.exists() and um.prop(SERVICE, "ActiveState") == "active"
                     and "strace" in um.prop(SERVICE, "ExecStart")), proc.stderr
        assert trace.stat().st_uid == um.uid  # written as the user, as systemctl edit would
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cp = autosandbox("reset", "--user", "-M", f"{USER}@", SERVICE)
    assert cp.returncode == 0, cp.stderr
    assert f"removed {trace}" in cp.stderr and f"restarted {SERVICE}" in cp.stderr, cp.stderr
    assert _tree(um.home / ".config", um.runtime_units) == before
    assert "strace" not in um.prop(SERVICE, "ExecStart")
    assert um.prop(SERVICE, "ActiveState") == "active"
    assert _wait(lambda: _get(f"http://127.0.0.1:{PORT}/"))
    assert um.prop(OTHER, "InvocationID") == other_id


def test_user_units_refused_before_anything_changes(um: UserManager) -> None:
    service_id = um.prop(SERVICE, "InvocationID")

    def refused(*args: str, words: tuple[str, ...]) -> None:
        cp = autosandbox("learn", "-q", *args, "--duration", "3s")
        lines = cp.stderr.strip().splitlines()
        assert cp.returncode == 2 and len(lines) == 1, cp.stderr
        assert all(w in lines[0] for w in words), (words, lines[0])

    refused("--user", "-M", f"{USER}@", f"user@{um.uid}.service", words=("user manager",))
    refused("--user", "-M", f"{USER}@", "as-usvc.socket", words=("not a service",))
    for name in ("as-uecho@.service", "as-uecho@1.service"):
        refused("--user", "-M", f"{USER}@", name, words=("Accept=yes", "not supported"))
    refused("--user", SERVICE, words=("-M USER@",))
    refused("-M", f"{USER}@", SERVICE, words=("--user",))
    refused("--user", "-M", "root@", SERVICE, words=("root",))
    refused("--user", "-M", "nobody@", SERVICE, words=("enable-linger nobody",))
    refused("--user", "-M", "as-no-such-user@", SERVICE, words=("no such user",))
    assert um.prop(SERVICE, "InvocationID") == service_id
    assert not um.runtime_units.exists()
