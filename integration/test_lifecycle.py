"""Validation runs the unit's whole life cycle against a real systemd (issue #9 items 1-5,
#10 item 6, #16 item 7): a baseline first, reload and stop in every trial, no side effects on
disk, and apply installs only what autosandbox validated."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import daemon_reload, run, unit_property, wait_for
from test_learn import autosandbox, killed_at

LIB = Path("/usr/local/lib/as-lc")
ETC = Path("/etc/systemd/system")
# A TCP server whose main process runs as nobody although the unit has no User= (it drops
# privileges itself, like dnsmasq); SIGHUP appends to a log; at SIGTERM it writes its state
# (a counter) and it reads it back at start (like mosquitto's retained messages).
SERVER = textwrap.dedent("""\
    import os, signal, socket, sys
    port, state = int(sys.argv[1]), sys.argv[2]
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    try:
        count = int(open(state).read())
    except FileNotFoundError:
        count = 0
    def stop(*_):
        with open(state + ".tmp", "w") as f:
            f.write(str(count + 1))
        os.replace(state + ".tmp", state)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, lambda *_: print("reloaded", flush=True))
    srv = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = srv.accept()
        conn.sendall(b"%d\\n" % count)
        conn.close()
    """)


# the fixture: (name, port, extra service lines) -> the unit and its state directory
LcUnit = Callable[..., tuple[str, Path]]


@pytest.fixture
def lc_unit() -> Iterator[LcUnit]:
    """Factory: lc_unit(name, port, service_lines) installs /etc/systemd/system/NAME.service
    running SERVER with state in /var/lib/NAME (owned by nobody, mode 0700) and starts it."""
    made: list[tuple[str, Path]] = []

    def _make(name: str, port: int, extra: str = "") -> tuple[str, Path]:
        LIB.mkdir(parents=True, exist_ok=True)
        (LIB / "server.py").write_text(SERVER)
        state = Path(f"/var/lib/{name}")
        state.mkdir(mode=0o700, exist_ok=True)
        os.chown(state, 65534, 65534)
        state.chmod(0o700)
        unit = f"{name}.service"
        (ETC / unit).write_text(
            f"[Service]\nExecStart=/usr/bin/python3 {LIB}/server.py {port} {state}/count\n"
            f"ExecReload=/bin/kill -HUP $MAINPID\n{extra}")
        made.append((unit, state))
        daemon_reload()
        assert run(["systemctl", "start", unit]).returncode == 0
        return unit, state

    yield _make
    for unit, state in made:
        # KillMode=process units leave their server behind a stop: it would hold its port for
        # the next test's unit (CI: as-lc-rot could not bind 8394 while as-lc-kept's ran on)
        run(["systemctl", "kill", "--kill-whom=all", "-s", "KILL", unit])
        run(["systemctl", "stop", unit])
        run(["systemctl", "reset-failed", unit])
        (ETC / unit).unlink(missing_ok=True)
        run(["rm", "-rf", str(state), f"/run/systemd/system/{unit}.d",
             f"/etc/systemd/system/{unit}.d", f"/var/lib/autosandbox/{unit}"])
    run(["rm", "-rf", str(LIB)])
    daemon_reload()


def _validate(unit: str, text: str, *extra: str) -> tuple[int, Any, str]:
    path = Path(f"/tmp/{unit}.candidate.conf")
    path.write_text(text)
    cp = autosandbox("validate", unit, str(path), "--json", "--settle", "1s", *extra)
    return cp.returncode, (json.loads(cp.stdout) if cp.stdout.strip() else {}), cp.stderr


def _owner_mode(path: str | Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


def test_a_unit_unhealthy_without_a_sandbox_stops_at_the_baseline(lc_unit: LcUnit) -> None:
    unit, _ = lc_unit("as-lc-base", 8391)
    rc, _, err = _validate(unit, "[Service]\nProtectSystem=strict\n",
                           "--health-cmd", "test -e /nonexistent")
    assert rc == 2, err
    assert f"{unit} is not healthy without any sandbox" in err
    assert "trial 2" not in err  # no candidate was ever tried
    assert unit_property(unit, "ActiveState") == "active"


def test_reload_needs_cap_kill_and_state_written_at_stop_survives(lc_unit: LcUnit) -> None:
    unit, state = lc_unit("as-lc-reload", 8392)
    before = _owner_mode(state)
    # What a short learn gives this service: no capability but the identity change, and no
    # write seen (the state is written only at stop).
    candidate = "[Service]\nProtectSystem=strict\nCapabilityBoundingSet=CAP_SETGID CAP_SETUID\n"
    rc, out, err = _validate(unit, candidate, "--health-port", "8392")
    assert rc == 0, err
    kinds = [t["kind"] for t in out["trials"]]
    assert kinds[0] == "baseline" and out["trials"][0]["healthy"]
    relaxed = {r["directive"]: r for t in out["trials"] for r in t["relaxed"]}
    # the reload (/bin/kill as root to a process of nobody) was refused: CAP_KILL, and only it
    assert "CAP_KILL" in relaxed["CapabilityBoundingSet"]["to"], out["trials"]
    assert "CAP_DAC_OVERRIDE" not in out["dropin"]
    # the state written at stop was refused (read-only): its directory became writable
    assert relaxed["ReadWritePaths"]["to"] == str(state), out["trials"]
    assert out["healthy"] and out["restarts"] <= 4, json.dumps(out["trials"], indent=1)
    assert _owner_mode(state) == before
    assert int((state / "count").read_text()) >= 1  # it survived a stop and a start


def test_a_directory_chowned_by_the_candidate_is_caught_and_put_back(lc_unit: LcUnit) -> None:
    unit, state = lc_unit("as-lc-disk", 8393)
    before = _owner_mode(state)
    assert before == (65534, 65534, 0o700)
    candidate = (f"[Service]\nProtectSystem=strict\nStateDirectory={state.name}\n"
                 "CapabilityBoundingSet=CAP_SETGID CAP_SETUID CAP_KILL\n")
    rc, out, err = _validate(unit, candidate, "--health-port", "8393")
    assert rc == 0, err
    first = out["trials"][1]
    assert not first["healthy"]
    assert any(c.startswith(f"{state}: owner nobody:nogroup -> root:root") for c in
               first["changes"]), first
    assert [(r["directive"], r["to"]) for r in first["relaxed"]][:1] == \
        [("StateDirectory", f"ReadWritePaths={state}")]
    assert not re.search(r"^StateDirectory=", out["dropin"], re.M)
    assert _owner_mode(state) == before  # put back after the trial, and at the end


PWN = "[Unit]\nDescription=pwn\n[Service]\nExecStartPre=/bin/touch /run/injected\nUser=root\n"


def test_apply_refuses_foreign_content_and_unvalidated_learns(lc_unit: LcUnit) -> None:
    unit, _ = lc_unit("as-lc-apply", 8394)
    target = ETC / f"{unit}.d" / "50-autosandbox.conf"
    pwn = Path("/tmp/as-lc-pwn.conf")
    pwn.write_text(PWN)
    for args in (("apply", unit, str(pwn)), ("apply", "--force", unit, str(pwn)),
                 ("validate", unit, str(pwn))):
        cp = autosandbox(*args)
        assert cp.returncode == 2 and "[Unit]" in cp.stderr, (args, cp.stderr)
        assert len(cp.stderr.strip().splitlines()) == 1
    assert not Path("/run/injected").exists() and not target.exists()

    cp = autosandbox("learn", unit, "--duration", "2s", "--no-validate", "-q")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stderr.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("not validated")]
    exposure = [i for i, line in enumerate(lines) if line.startswith("exposure")]
    assert said and (not exposure or said[0] < exposure[0]), cp.stderr  # said first
    assert not Path(f"/var/lib/autosandbox/{unit}/learned.conf").exists()
    refused = autosandbox("apply", unit)
    assert refused.returncode == 2 and "not validated" in refused.stderr
    assert not target.exists()
    forced = autosandbox("apply", "--force", unit, "--settle", "1s",
                         "--health-port", "8394")
    learned = Path(f"/var/lib/autosandbox/{unit}/unvalidated.conf").read_text()
    journal = run(["journalctl", "-u", unit, "-n", "30", "--no-pager"]).stdout
    assert forced.returncode == 0, f"{forced.stderr}\n{learned}\n{journal}"
    assert target.exists()
    autosandbox("revert", unit, check_rc=0)
    assert not target.exists()


def _bounding_set(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return line.split()[1]
    raise AssertionError(f"no CapBnd for {pid}")


def _in_cgroup(group: str) -> list[int]:
    """Pids whose cgroup (v2, or the name=systemd hierarchy of a hybrid setup) is `group`."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                lines = (d / "cgroup").read_text().splitlines()
            except OSError:
                continue
            if any(line.endswith(f":{group}") for line in lines):
                out.append(int(d.name))
    return out


def test_what_a_trials_stop_leaves_running_is_ended_not_kept(lc_unit: LcUnit) -> None:
    """exim4's init script stops its daemon only with a capability a candidate may lack, and
    with KillMode=process the daemon then ran on with the trial's sandbox: every later start
    failed to bind its port (the trials tested the leftover) and the unit 'restored' kept it.
    Here the stop's kill needs CAP_KILL (root to nobody); the candidate lacks it."""
    unit, _ = lc_unit("as-lc-left", 8393, (
        "ExecStart=\n"
        f"ExecStart=/bin/sh -c '/usr/bin/python3 {LIB}/server.py 8393 /var/lib/as-lc-left/count"
        " & echo $$! > /run/as-lc-left/pid; wait'\n"
        "ExecReload=\n"
        "ExecStop=/bin/sh -c 'kill $$(cat /run/as-lc-left/pid) || true'\n"
        "RuntimeDirectory=as-lc-left\nKillMode=process\n"))
    rc, out, err = _validate(unit, "[Service]\nCapabilityBoundingSet=CAP_SETGID CAP_SETUID\n",
                             "--health-port", "8393")
    trials = out.get("trials", [])
    assert trials and trials[0]["healthy"], (rc, err)
    left = [p for t in trials[1:] for p in t["problems"] if "its stop left" in p]
    assert left, json.dumps(trials, indent=1)
    # the unit as found again: its processes all unsandboxed (PID 1's bounding set), one
    # server among them, none of a trial's
    group = unit_property(unit, "ControlGroup")
    pids = _in_cgroup(group)
    servers = [p for p in pids
               if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/usr/bin/python3\0")]
    assert len(servers) == 1, (pids, err)
    assert {p: _bounding_set(p) for p in pids} == {p: _bounding_set(1) for p in pids}, err
    assert unit_property(unit, "ActiveState") == "active"
    assert run(["python3", "-c", "import socket; socket.create_connection("
                "('127.0.0.1', 8393), 5)"]).returncode == 0


def test_reset_after_a_kill_ends_what_a_trials_stop_left(lc_unit: LcUnit) -> None:
    """As above, but autosandbox is killed right after the candidate's stop, before it ends
    the leftover. The stop removed the pid file it could not act on, so the unit's own stop
    cannot find that server either: `reset` ends it from the processes the run recorded as
    found, and starts the unit as found."""
    unit, _ = lc_unit("as-lc-kept", 8394, (
        "ExecStart=\n"
        f"ExecStart=/bin/sh -c '/usr/bin/python3 {LIB}/server.py 8394 /var/lib/as-lc-kept/count"
        " & echo $$! > /run/as-lc-kept/pid; wait'\n"
        "ExecReload=\n"
        "ExecStop=/bin/sh -c 'kill $$(cat /run/as-lc-kept/pid); rm -f /run/as-lc-kept/pid'\n"
        "RuntimeDirectory=as-lc-kept\nKillMode=process\n"))
    group = unit_property(unit, "ControlGroup")
    found = set(_in_cgroup(group))
    candidate = Path(f"/tmp/{unit}.candidate.conf")
    candidate.write_text("[Service]\nCapabilityBoundingSet=CAP_SETGID CAP_SETUID\n")
    killed_at("candidate-stopped", "validate", unit, str(candidate), "--settle", "1s",
              "--health-port", "8394")
    kept = [p for p in _in_cgroup(group) if _bounding_set(p) != _bounding_set(1)]
    assert kept, "the candidate's stop left no server: nothing to test"
    cp = autosandbox("reset", unit)
    assert cp.returncode == 0, cp.stderr
    assert "ended 1 process(es) a trial started and its stop left running" in cp.stderr, \
        cp.stderr
    pids = _in_cgroup(group)
    assert not set(kept) & set(pids), (kept, pids)
    assert {p: _bounding_set(p) for p in pids} == {p: _bounding_set(1) for p in pids}
    assert not found & set(pids)  # reset restarted it: a new run, as found
    assert unit_property(unit, "ActiveState") == "active"
    assert run(["python3", "-c", "import socket; socket.create_connection("
                "('127.0.0.1', 8394), 5)"]).returncode == 0


LOGGER = textwrap.dedent("""\
    import signal, socket, sys
    port, path = int(sys.argv[1]), sys.argv[2]
    log = open(path, "a", buffering=1)
    def reopen(*_):
        global log
        log.close()
        log = open(path, "a", buffering=1)
    signal.signal(signal.SIGHUP, reopen)
    srv = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = srv.accept()
        log.write("served\\n")
        conn.sendall(b"ok\\n")
        conn.close()
    """)


def test_a_log_that_logrotate_renames_still_written_after_a_rotation(lc_unit: LcUnit) -> None:
    """A log file granted by itself is a bind mount of that file: logrotate's rename left the
    service's namespace writing the rotated file, and the new one read-only (vsftpd refused
    every login after its first rotation, rsyslog stopped logging). Rotated here as logrotate
    does with `create`: rename, a new file, SIGHUP (the image has no logrotate binary)."""
    log, conf = Path("/var/log/as-lc-rot.log"), Path("/etc/logrotate.d/as-lc-rot")
    main = Path("/etc/logrotate.conf")  # logrotate's own, which includes logrotate.d
    made_main = not main.exists()
    if made_main:
        main.write_text("weekly\nrotate 4\ncreate\ninclude /etc/logrotate.d\n")
    LIB.mkdir(parents=True, exist_ok=True)
    (LIB / "logger.py").write_text(LOGGER)
    conf.write_text(f"{log} {{\n\tweekly\n\tcreate 0640 root adm\n\tpostrotate\n"
                    "\t\tsystemctl kill -s HUP as-lc-rot.service\n\tendscript\n}\n")
    unit, _ = lc_unit("as-lc-rot", 8395, (
        f"ExecStart=\nExecStart=/usr/bin/python3 {LIB}/logger.py 8395 {log}\nExecReload=\n"))
    hit = ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8395), 5)"
           ".recv(9)"]
    try:
        cp = autosandbox("learn", unit, "--duration", "5s", "--json", "--settle", "2s",
                         "--exercise", " ".join(hit[:2]) + ' "' + hit[2] + '"')
        assert cp.returncode == 0, cp.stderr
        result = json.loads(cp.stdout)
        for t in result["validation"]["trials"]:  # shown with -rP
            print(t["trial"], t["kind"], t["healthy"], t["problems"][:2],
                  [(r["directive"], r["to"]) for r in t["relaxed"]], t["log"][:2])
        assert f"logrotate renames {log}" in " ".join(
            w["hint"] for w in result["sandbox"]["withheld"]), result["sandbox"]["withheld"]
        assert str(log) not in " ".join(
            v for s in result["sandbox"]["settings"] if s["directive"] == "ReadWritePaths"
            for v in s["values"])
        assert autosandbox("apply", unit).returncode == 0
        assert run(hit).returncode == 0
        log.rename(f"{log}.1")
        log.touch(mode=0o640)
        run(["systemctl", "kill", "-s", "HUP", unit], check=True)
        assert run(hit).returncode == 0
        assert wait_for(lambda: "served" in log.read_text() or None, timeout=10,
                        what="a line in the new log")
    finally:
        autosandbox("revert", unit)
        for f in (conf, log, Path(f"{log}.1"), *([main] if made_main else [])):
            f.unlink(missing_ok=True)
