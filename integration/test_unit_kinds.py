"""Every kind of unit an admin runs (issue #16): template instances with specifiers,
socket activation (Accept=no, and Accept=yes: a template learned from every instance),
timers, and the kinds that are refused in one line before anything changes (RootDirectory=,
--user without -M USER@, a unit with nothing in its sandbox).
Services: integration/services/as-kinds."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import UNIT_DIR, run, unit_property, wait_for
from test_learn import autosandbox, spawn_learn

RUN_DIR = Path("/run/systemd/system")
QUICK = ("--duration", "3s", "--settle", "1s", "--max-trials", "6", "--json", "-q")


def learned(cp: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert cp.returncode == 0, f"rc {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    out: dict[str, Any] = json.loads(cp.stdout)
    return out


def refused(cp: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = cp.stderr.strip().splitlines()
    assert cp.returncode == 2, cp.stderr
    assert len(lines) == 1 and lines[0].startswith("autosandbox: error: "), cp.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert cp.stdout == ""
    return lines[0]


def no_trace_left(*units: str) -> None:
    for unit in units:
        assert not (RUN_DIR / f"{unit}.d").exists(), unit


@pytest.fixture
def kinds(install_service):  # type: ignore[no-untyped-def]
    svc = install_service("as-kinds")
    yield svc
    for pattern in ("as-tmpl@*.service", "as-echo@*.service"):
        names = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", pattern])
        for line in names.stdout.splitlines():
            run(["systemctl", "stop", line.split()[0]])
    for unit in ("as-tmpl@.service", "as-sock.service", "as-tick.service"):
        shutil.rmtree(f"/var/lib/autosandbox/{unit}", ignore_errors=True)
    for user in ("nobody", "daemon"):
        shutil.rmtree(f"/var/lib/as-tmpl-{user}", ignore_errors=True)
    shutil.rmtree(UNIT_DIR / "as-tmpl@.service.d", ignore_errors=True)
    shutil.rmtree(UNIT_DIR / "as-echo@.service.d", ignore_errors=True)
    shutil.rmtree("/var/lib/autosandbox/as-echo@.service", ignore_errors=True)


def test_a_template_instance_with_user_from_its_name(kinds) -> None:  # type: ignore[no-untyped-def]
    """User=%i, StateDirectory=as-tmpl-%i: scored and validated as the instance, applied for
    every instance (--template), reverted."""
    unit = "as-tmpl@nobody.service"
    kinds.start(unit)
    out = learned(autosandbox("learn", unit, "--template", *QUICK))
    assert out["validated"], out["notes"]
    assert out["exposure"]["after"]["exposure"] < out["exposure"]["before"]["exposure"]
    assert any("every instance of as-tmpl@.service" in n for n in out["notes"]), out["notes"]
    assert unit_property(unit, "ActiveState") == "active"
    no_trace_left(unit, "as-tmpl@.service")
    cp = autosandbox("apply", unit, "--template", "--settle", "1s")
    assert cp.returncode == 0, cp.stderr
    installed = UNIT_DIR / "as-tmpl@.service.d" / "50-autosandbox.conf"
    assert installed.is_file() and not (UNIT_DIR / f"{unit}.d").exists()
    assert "ProtectSystem=strict" in installed.read_text()
    assert installed.as_posix() in unit_property(unit, "DropInPaths")
    assert unit_property(unit, "ActiveState") == "active"
    # another instance (another user, another state directory) starts with it and works
    other = "as-tmpl@daemon.service"
    kinds.start(other)
    assert installed.as_posix() in unit_property(other, "DropInPaths")
    assert unit_property(other, "ProtectSystem") == "strict"
    wait_for(lambda: Path("/var/lib/as-tmpl-daemon/beat").is_file(), timeout=60,
             what="the second instance's work")
    assert unit_property(other, "ActiveState") == "active", kinds.diagnostics(other)
    diff = autosandbox("diff", unit, "--template")
    # what is installed for the template is what was learned: no line differs
    assert diff.returncode == 0 and "+++" not in diff.stdout, diff.stdout
    cp = autosandbox("revert", unit, "--template")
    assert cp.returncode == 0, cp.stderr
    assert not installed.exists() and not installed.parent.exists()
    assert unit_property(unit, "ActiveState") == "active"


def _hello(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return s.recv(64)


EXERCISE_SOCK = ("python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', "
                 "8091), timeout=5); assert s.recv(64).startswith(b'hello')\"")


def test_a_socket_learns_the_service_it_starts(kinds) -> None:  # type: ignore[no-untyped-def]
    kinds.start("as-sock.socket")
    socket_file = (UNIT_DIR / "as-sock.socket").read_bytes()
    assert _hello(8091).startswith(b"hello")  # socket activation works as found
    out = learned(autosandbox("learn", "as-sock.socket", "--exercise", EXERCISE_SOCK, *QUICK))
    assert out["validated"], out["notes"]
    assert any("as-sock.socket was left untouched" in n for n in out["notes"]), out["notes"]
    assert "ProtectSystem=strict" in out["dropin"]
    # the socket as it was: same file, no drop-in, still listening, still activating
    assert (UNIT_DIR / "as-sock.socket").read_bytes() == socket_file
    no_trace_left("as-sock.socket", "as-sock.service")
    assert unit_property("as-sock.socket", "ActiveState") == "active"
    assert unit_property("as-sock.service", "ActiveState") == "active"  # as found
    assert _hello(8091).startswith(b"hello")
    cp = autosandbox("apply", "as-sock.service", "--exercise", EXERCISE_SOCK, "--settle", "1s")
    assert cp.returncode == 0, cp.stderr
    assert _hello(8091).startswith(b"hello")
    assert autosandbox("revert", "as-sock.service").returncode == 0
    assert not (UNIT_DIR / "as-sock.service.d").exists()


def test_a_service_its_socket_starts_again_at_once_is_validated(kinds) -> None:  # type: ignore[no-untyped-def]
    """Seen on Debian's rsyslog (journald writes to syslog.socket all the time): each stop of
    a trial was followed at once by a start from its socket, and validation took that for a
    stop that hung ("stop took over 300s"), so even the unit as found was refused."""
    kinds.start("as-sock.socket")
    stop = threading.Event()

    def traffic() -> None:  # a client that never pauses, as journald on a busy host
        while not stop.is_set():
            with contextlib.suppress(OSError):
                _hello(8091)
            time.sleep(0.02)

    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    try:
        out = learned(autosandbox("learn", "as-sock.socket", "--exercise", EXERCISE_SOCK,
                                  *QUICK))
    finally:
        stop.set()
        client.join(30)
    assert out["validated"], out["notes"]
    base = out["validation"]["trials"][0]
    assert base["kind"] == "baseline" and base["healthy"], base
    no_trace_left("as-sock.socket", "as-sock.service")
    assert _hello(8091).startswith(b"hello")


@pytest.mark.vm
def test_socket_activation_with_ip_address_deny(kinds) -> None:  # type: ignore[no-untyped-def]
    """In the VM, where IPAddressDeny= is enforced: the service behind a socket created no IP
    socket of its own, so it is denied all IP traffic, and it still serves: a service's access
    list does not apply to the sockets passed to it (systemd.resource-control(5))."""
    kinds.start("as-sock.socket")
    out = learned(autosandbox("learn", "as-sock.socket", "--exercise", EXERCISE_SOCK, *QUICK))
    assert out["validated"], out["notes"]
    assert re.search(r"^IPAddressDeny=any$", out["dropin"], re.M), out["dropin"]
    assert not re.search(r"^IPAddressAllow=", out["dropin"], re.M), out["dropin"]
    cp = autosandbox("apply", "as-sock.service", "--exercise", EXERCISE_SOCK, "--settle", "1s")
    assert cp.returncode == 0, cp.stderr
    try:
        assert unit_property("as-sock.service", "IPAddressDeny").strip(), "not applied"
        for _ in range(3):  # each connection through the socket, with the list in force
            assert _hello(8091).startswith(b"hello")
        assert unit_property("as-sock.service", "ActiveState") == "active"
    finally:
        assert autosandbox("revert", "as-sock.service").returncode == 0
    assert not (UNIT_DIR / "as-sock.service.d").exists()
    no_trace_left("as-sock.socket", "as-sock.service")


ECHO_TEMPLATE = "as-echo@.service"
# Three connections at once, each echoed: three instances of as-echo@.service side by side.
ECHO_CLIENTS = """
import socket
conns = [socket.create_connection(("127.0.0.1", 8092), timeout=10) for _ in range(3)]
files = [c.makefile("rwb") for c in conns]
for i, f in enumerate(files):
    f.write(b"ping %d\\n" % i)
    f.flush()
for i, f in enumerate(files):
    assert f.readline() == b"ping %d\\n" % i
"""


def _echo(conn: socket.socket, word: bytes) -> bytes:
    conn.sendall(word + b"\n")
    return conn.makefile("rb").readline()


def _echo_instances() -> list[str]:
    cp = run(["systemctl", "list-units", "--plain", "--no-legend", "as-echo@*.service"])
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def test_a_per_connection_template_is_learned_from_every_instance(  # type: ignore[no-untyped-def]
        kinds, tmp_path) -> None:
    """Accept=yes: the socket, the template and an instance all lead to the template; every
    instance started while learning is traced and merged, each trial's connections start
    instances that must end cleanly; nothing is restarted and a connection served before
    learning is served throughout (its instance is not traced, not counted)."""
    script = tmp_path / "clients.py"
    script.write_text(ECHO_CLIENTS)
    exercise = f"python3 {script}"
    kinds.start("as-echo.socket")
    socket_file = (UNIT_DIR / "as-echo.socket").read_bytes()
    with socket.create_connection(("127.0.0.1", 8092), timeout=10) as old:
        assert _echo(old, b"before") == b"before\n"
        [first] = wait_for(_echo_instances, timeout=30, what="the first instance")
        pid = unit_property(first, "MainPID")
        out = learned(autosandbox("learn", "as-echo.socket", "--exercise", exercise, *QUICK))
        notes = "\n".join(out["notes"])
        assert out["validated"], notes
        traced = re.search(r"(\d+) instance\(s\) of as-echo@.service started by as-echo.socket "
                           r"were traced", notes)
        assert traced and int(traced.group(1)) >= 3, notes
        assert "1 instance(s) already running when learning began were left alone" in notes
        trials = out["validation"]["trials"]
        assert all(t["instances"] >= 3 for t in trials), trials  # each trial connected
        assert "ProtectSystem=strict" in out["dropin"], out["dropin"]
        assert "validated on as-echo@.service" in out["dropin"]
        # the socket and the connection served before learning: as they were
        assert (UNIT_DIR / "as-echo.socket").read_bytes() == socket_file
        assert unit_property("as-echo.socket", "ActiveState") == "active"
        assert unit_property(first, "MainPID") == pid
        assert _echo(old, b"after") == b"after\n"
        no_trace_left("as-echo.socket", ECHO_TEMPLATE)
        # the instances wrote their state directory (the write only they do)
        assert len(Path("/var/lib/as-echo/seen").read_text().splitlines()) >= 7

        cp = autosandbox("apply", ECHO_TEMPLATE, "--exercise", exercise, "--settle", "1s")
        assert cp.returncode == 0, cp.stderr
        installed = UNIT_DIR / "as-echo@.service.d" / "50-autosandbox.conf"
        assert "ProtectSystem=strict" in installed.read_text()
        with socket.create_connection(("127.0.0.1", 8092), timeout=10) as new:
            assert _echo(new, b"sandboxed") == b"sandboxed\n"
            [inst] = [i for i in _echo_instances() if i != first]
            assert unit_property(inst, "ProtectSystem") == "strict"
        assert unit_property(first, "MainPID") == pid  # still not restarted
        diff = autosandbox("diff", ECHO_TEMPLATE)
        assert diff.returncode == 0 and "+++" not in diff.stdout, diff.stdout
        cp = autosandbox("revert", ECHO_TEMPLATE)
        assert cp.returncode == 0, cp.stderr
        assert not installed.exists() and not installed.parent.exists()
        assert _echo(old, b"still") == b"still\n"
    with socket.create_connection(("127.0.0.1", 8092), timeout=10) as conn:
        assert _echo(conn, b"reverted") == b"reverted\n"


def test_the_template_and_an_instance_lead_to_the_same_learn(  # type: ignore[no-untyped-def]
        kinds, tmp_path) -> None:
    """`learn NAME@.service` and `learn NAME@INSTANCE.service` learn the template (never one
    instance traced while its siblings run untraced); without connections nothing is
    learned, in one line."""
    script = tmp_path / "clients.py"
    script.write_text(ECHO_CLIENTS)
    kinds.start("as-echo.socket")
    out = learned(autosandbox("learn", ECHO_TEMPLATE, "--exercise", f"python3 {script}",
                              "--no-validate", *QUICK))
    assert out["exposure"]["after"]["exposure"] < out["exposure"]["before"]["exposure"]
    assert any("were traced" in n for n in out["notes"]), out["notes"]
    with socket.create_connection(("127.0.0.1", 8092), timeout=10) as conn:
        assert _echo(conn, b"x") == b"x\n"
        [name] = wait_for(_echo_instances, timeout=30, what="an instance")
        pid = unit_property(name, "MainPID")
        out = learned(autosandbox("learn", name, "--exercise", f"python3 {script}",
                                  "--no-validate", *QUICK))
        assert any(f"{name} is one of the instances as-echo.socket starts per connection: "
                   "learned their template as-echo@.service instead" in n
                   for n in out["notes"]), out["notes"]
        assert unit_property(name, "MainPID") == pid  # not restarted, not traced
        refused(autosandbox("learn", "-q", "as-echo.socket", "--duration", "3s"),
                "no connection to as-echo.socket", "nothing was learned")
        assert _echo(conn, b"y") == b"y\n"
    refused(autosandbox("learn", "-q", "as-tmpl@.service", "--duration", "3s"), "template")
    no_trace_left(ECHO_TEMPLATE, "as-echo.socket")


def test_a_trial_is_judged_by_the_instances_it_started(kinds, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The port check passes whatever the instance does (systemd accepts the connection):
    a candidate that kills every instance is unhealthy by their results alone; a trial
    whose checks start no instance tests nothing and is refused before anything changes."""
    kinds.start("as-echo.socket")
    bad = tmp_path / "bad.conf"
    bad.write_text("[Service]\nSystemCallFilter=@signal\n")
    cp = autosandbox("validate", ECHO_TEMPLATE, str(bad), "--health-port", "127.0.0.1:8092",
                     "--settle", "1s", "--max-trials", "2", "--json")
    assert cp.returncode == 3, cp.stderr
    base, cand = json.loads(cp.stdout)["trials"]
    assert base["healthy"] and base["instances"] >= 2, base
    assert not cand["healthy"] and cand["instances"] >= 1, cand
    assert any(p.startswith("instance as-echo@") and "failed" in p
               for p in cand["problems"]), cand["problems"]
    no_trace_left(ECHO_TEMPLATE)
    refused(autosandbox("validate", ECHO_TEMPLATE, str(bad)), "needs a check that connects")
    with socket.create_connection(("127.0.0.1", 8092), timeout=10) as conn:
        assert _echo(conn, b"ok") == b"ok\n"


def _status(pid: str, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def _tracer(pid: str) -> int:
    return _status(pid, "TracerPid")


def test_a_per_connection_learn_cut_by_a_signal_or_killed(kinds) -> None:  # type: ignore[no-untyped-def]
    """SIGINT: the template's trace drop-in goes, a traced instance serving a connection keeps
    serving it, nothing is learned. SIGKILL: `reset NAME@.service` removes what was left,
    restarts nothing; the socket listens throughout."""
    kinds.start("as-echo.socket")
    dropin = RUN_DIR / "as-echo@.service.d" / "zz-autosandbox-trace.conf"
    for how in ("interrupt", "kill"):
        proc = spawn_learn("as-echo.socket", "--duration", "5m", "-q")
        try:
            wait_for(dropin.exists, timeout=120, interval=0.05, what="the trace drop-in")
            with socket.create_connection(("127.0.0.1", 8092), timeout=10) as conn:
                assert _echo(conn, b"traced") == b"traced\n"  # an instance under the trace
                [name] = wait_for(_echo_instances, timeout=30, what="the traced instance")
                pid = unit_property(name, "MainPID")
                assert _tracer(pid) != 0  # started in the window: under strace
                if how == "interrupt":
                    proc.send_signal(signal.SIGINT)
                    out, err = proc.communicate(timeout=120)
                    assert proc.returncode == 130 and out == "", err
                else:
                    proc.kill()
                    proc.communicate(timeout=30)
                    assert dropin.exists()
                    cp = autosandbox("reset", ECHO_TEMPLATE)
                    assert cp.returncode == 0, cp.stderr
                assert not dropin.exists() and not dropin.parent.exists()
                assert unit_property(name, "MainPID") == pid  # never stopped or restarted
                assert _echo(conn, b"still") == b"still\n"
                # our strace let go of it (the restore, or reset after a kill)
                wait_for(lambda p=pid: _tracer(p) == 0,  # type: ignore[misc]
                         timeout=30, what="strace detached")
                # and left no seccomp filter on it: one outlives its tracer, and each call it
                # hands to one then fails with ENOSYS (the socket's filters are the host's)
                assert _status(pid, "Seccomp_filters") == _status("1", "Seccomp_filters")
                assert _echo(conn, b"untraced") == b"untraced\n"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert unit_property("as-echo.socket", "ActiveState") == "active"
        with socket.create_connection(("127.0.0.1", 8092), timeout=10) as conn:
            assert _echo(conn, b"new") == b"new\n"  # untraced again
    assert not Path("/run/autosandbox/as-echo@.service").exists()


def test_a_timer_is_learned_from_its_own_runs(kinds) -> None:  # type: ignore[no-untyped-def]
    """No run off schedule while tracing; the runs are counted; validation's runs are its
    trials (one run each)."""
    runs = Path("/var/lib/as-tick/runs")
    proc = spawn_learn("as-tick.timer", "--duration", "8s", "--max-trials", "4", "--json",
                       "-q")
    try:
        wait_for(lambda: (RUN_DIR / "as-tick.service.d" / "zz-autosandbox-trace.conf")
                 .exists(), timeout=120, interval=0.05, what="the trace drop-in")
        assert not runs.exists()  # learning did not start it
        kinds.start("as-tick.timer")  # its one run comes 3 s later, inside the window
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["validated"], out["notes"]
    assert any("1 run(s) of as-tick.service started by as-tick.timer were traced" in n
               for n in out["notes"]), out["notes"]
    restarts = out["validation"]["restarts"]
    assert len(runs.read_text().splitlines()) == 1 + restarts  # the timer's + one per trial
    no_trace_left("as-tick.service", "as-tick.timer")


def test_kinds_refused_before_anything_changes(kinds) -> None:  # type: ignore[no-untyped-def]
    before = unit_property("as-root.service", "ActiveState")
    refused(autosandbox("learn", "-q", "as-root.service", "--duration", "3s"),
            "RootDirectory=/srv/as-root", "nothing was changed")
    assert unit_property("as-root.service", "ActiveState") == before
    no_trace_left("as-root.service")
    refused(autosandbox("learn", "-q", "--user", "as-plus.service", "--duration", "3s"),
            "--user")
    refused(autosandbox("learn", "-q", "--template", "as-plus.service", "--duration", "3s"),
            "not an instance", "--template")
    # Its only line runs outside the sandbox: an empty trace is no profile.
    kinds.start("as-plus.service")
    refused(autosandbox("learn", "-q", "as-plus.service", "--duration", "3s"), "trace",
            "empty")
    assert not Path("/var/lib/autosandbox/as-plus.service/learned.conf").exists()
    assert not Path("/var/lib/autosandbox/as-plus.service/unvalidated.conf").exists()
    no_trace_left("as-plus.service")
    assert unit_property("as-plus.service", "ActiveState") == "active"
