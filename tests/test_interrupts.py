"""The interruption contract for a traced command (the unit side: integration/test_signals.py):
a signal stops everything we started, removes what we created, saves nothing and exits 130;
after SIGKILL the watchdog ends our helpers and `reset --all` removes the rest."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from autosandbox import interrupts
from autosandbox.errors import UserError
from autosandbox.systemd.runstate import RUNS_DIR

# unique to this test process: another run of these tests on the machine has its own
PROBE = f"as-interrupt-probe-{os.getpid()}-{os.urandom(4).hex()}"
PROGRAM = ["/usr/bin/python3", "-c",
           "import time\nwhile True:\n    open('/etc/hostname').read(); time.sleep(0.05)", PROBE]
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("strace") is None,
                                reason="needs root and strace")


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "autosandbox", "learn", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def probe_pids(program_only: bool = False) -> list[int]:
    """Our processes running PROGRAM: the shim and strace too, unless `program_only`."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes()
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if PROBE.encode() in cmd and state != "Z" and b"-m\0autosandbox" not in cmd and (
                    not program_only or cmd.startswith(PROGRAM[0].encode() + b"\0")):
                out.append(int(name))
    return out


def left_by(pid: int) -> list[str]:
    """What the autosandbox process `pid` still has on this machine."""
    left = [f"process {p}" for p in probe_pids()]
    for root in (Path("/sys/kernel/tracing/instances"), RUNS_DIR):
        if root.is_dir():
            left += [str(p) for p in root.iterdir() if f"-{pid}-" in f"-{p.name}"]
    return left


def wait_until(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def tracing(proc: subprocess.Popen[str]) -> bool:
    """The traced program runs (so every helper is up): not only the shim waiting for them."""
    return proc.poll() is not None or bool(probe_pids(program_only=True))


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                 signal.SIGUSR1, signal.SIGALRM, signal.SIGXCPU],
                         ids=lambda s: s.name)
def test_a_signal_stops_everything_and_saves_nothing(tmp_path: Path,
                                                     sig: signal.Signals) -> None:
    rng = random.Random(f"interrupt-{sig}")
    proc = start("--duration", "60s", "-o", str(tmp_path / "x.conf"), "--", *PROGRAM,
                 cwd=tmp_path)
    assert wait_until(lambda: tracing(proc), 60)
    time.sleep(rng.uniform(0, 1.5))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == "" and err.strip().splitlines()[-1].startswith(
        f"autosandbox: interrupted by {sig.name}"), err
    assert list(tmp_path.iterdir()) == []  # neither the drop-in nor the profile
    assert wait_until(lambda: not left_by(proc.pid), 10), left_by(proc.pid)


@needs_root
def test_keep_partial_saves_the_profile_marked_partial(tmp_path: Path) -> None:
    proc = start("--duration", "60s", "--keep-partial", "-o", str(tmp_path / "x.conf"), "--",
                 *PROGRAM, cwd=tmp_path)
    assert wait_until(lambda: tracing(proc), 60)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"], err  # no drop-in
    profile = json.loads((tmp_path / "x.json").read_text())
    assert profile["subject"]["partial"] is True
    assert "/etc/hostname" in profile["paths"]
    assert wait_until(lambda: not left_by(proc.pid), 10), left_by(proc.pid)


@needs_root
def test_ctrl_c_ends_an_untimed_command_normally(tmp_path: Path) -> None:
    """README: `learn -- CMD` traces until the command exits or Ctrl-C."""
    proc = start("--", *PROGRAM, cwd=tmp_path)
    assert wait_until(lambda: tracing(proc), 60)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "[Service]" in out
    assert wait_until(lambda: not left_by(proc.pid), 10), left_by(proc.pid)


@needs_root
def test_sigkill_leaves_no_helper_and_reset_removes_the_rest(tmp_path: Path) -> None:
    proc = start("--duration", "60s", "--", *PROGRAM, cwd=tmp_path)
    assert wait_until(lambda: tracing(proc), 60)
    time.sleep(0.5)
    record = [p for p in RUNS_DIR.glob(f"{proc.pid}-*.jsonl")]
    assert record, "the run is on record while it lasts"
    helpers = [json.loads(line)["pid"] for line in record[0].read_text().splitlines()
               if json.loads(line)["kind"] == "process"]
    proc.kill()
    proc.communicate(timeout=30)
    # the watchdog ends strace, the program and bpftrace, and removes the tracefs instances
    # (their pid filter costs every task's context switches): no one has to run reset for that
    assert wait_until(lambda: not probe_pids(), 20), probe_pids()
    instances = Path("/sys/kernel/tracing/instances")
    assert wait_until(lambda: not [p for p in left_by(proc.pid) if p.startswith(str(instances))],
                      20), left_by(proc.pid)
    assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in helpers), 20)
    reset = subprocess.run([sys.executable, "-m", "autosandbox", "reset", "--all"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert reset.returncode == 0, reset.stderr
    assert left_by(proc.pid) == [], reset.stderr
    again = subprocess.run([sys.executable, "-m", "autosandbox", "reset", "--all"],
                           capture_output=True, text=True, timeout=120, check=False)
    # nothing of ours is left to reset (another run of the tests on the machine, a busy one,
    # may have left its own for a moment: reset --all sees every run)
    assert again.returncode == 0 and again.stderr.strip(), again.stderr
    ours = [line for line in again.stderr.splitlines()
            if f"-{proc.pid}-" in line or f"(pid {proc.pid})" in line
            or any(f"process {p} " in line for p in helpers)]
    assert ours == [], again.stderr


def test_a_second_signal_does_not_cut_a_restore() -> None:
    old = interrupts.install()
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the signal lands here
            finally:
                os.kill(os.getpid(), signal.SIGHUP)  # ignored: already unwinding
                time.sleep(0.05)
                done.append("restored")
        assert done == ["restored"]
        interrupts.forget()
        with pytest.raises(KeyboardInterrupt), interrupts.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("shielded body finished")
        assert done[-1] == "shielded body finished"
    finally:
        interrupts.forget()
        interrupts.restore(old)


def test_a_signal_during_a_finalizer_is_not_lost() -> None:
    """Python drops an exception raised in __del__: the interruption comes back after it."""
    class Slow:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the signal lands in here

    old = interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            Slow()  # dropped at once: __del__ runs here
            for _ in range(100):  # the work goes on; it must be interrupted
                time.sleep(0.05)
        assert interrupts.interrupted() == signal.SIGTERM
    finally:
        interrupts.forget()
        interrupts.restore(old)


def test_watchdog_kills_the_session_of_a_helper_that_died_before_it_was_read() -> None:
    """After a SIGKILL the death signal ends a helper at once; the watchdog may read the
    helper's announcement only then. What the helper said of itself (pid, session, start)
    must still let the watchdog end the rest of its session (strace's tracee)."""
    leader = subprocess.Popen(["/bin/bash", "-c", "sleep 60 >/dev/null 2>&1 & echo $!; read -r _"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              start_new_session=True)
    assert leader.stdout is not None and leader.stdin is not None
    member = int(leader.stdout.readline())
    fields = Path(f"/proc/{leader.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    said = b"%d %d %d\n" % (leader.pid, int(fields[3]), int(fields[19]))
    leader.communicate(b"\n", timeout=30)  # the leader is gone; its member lives on
    assert Path(f"/proc/{member}").exists()
    r, w = os.pipe()
    watchdog = subprocess.Popen(
        [sys.executable, "-S", str(Path(interrupts.__file__).with_name("watchdog.py")),
         str(os.getpid())], stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(r)
    try:
        os.write(w, said)
    finally:
        os.close(w)  # its owner is "gone": the watchdog acts on what it was told
    watchdog.wait(timeout=60)
    try:
        assert wait_until(lambda: gone(member), 20), "the dead helper's session outlived it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


# An autosandbox process (its watchdog polling) starts a helper that waits between its fork
# and its setsid, as one waiting for a CPU on a busy machine does, then leads a session with
# a member; prints "HELPER MEMBER".
SLOW_SETSID_OWNER = """
import os, subprocess, time
from autosandbox import procs
watchdog = procs.ensure_watchdog()
def looping():  # its loop polls our children with its stdin made non-blocking
    with open(f"/proc/{watchdog}/fdinfo/0") as f:
        flags = int(f.read().split("flags:")[1].split()[0], 8)
    return flags & os.O_NONBLOCK
while not looping():
    time.sleep(0.01)
def slow_setsid():
    time.sleep(2)  # in our session still: the watchdog's polls see the helper here
    os.setsid()
helper = subprocess.Popen(["/bin/bash", "-c", "sleep 60 >/dev/null 2>&1 & echo $!; exec sleep 60"],
                          stdout=subprocess.PIPE, text=True,
                          preexec_fn=procs.child_setup(slow_setsid))
print(helper.pid, helper.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


def test_watchdog_ends_the_session_of_a_helper_it_polled_before_its_setsid() -> None:
    """A poll of the owner's children saw the helper still in the owner's session; what
    the helper announced after its setsid must win, or (the helper dead by its death signal)
    the session it led outlives a SIGKILLed owner: strace's tracee kept the user's terminal
    (the unit-under-load CI failure of test_sigkill_leaves_no_helper_and_reset_removes_the_rest)."""
    owner = subprocess.Popen([sys.executable, "-c", SLOW_SETSID_OWNER], stdout=subprocess.PIPE,
                             text=True, cwd=Path(interrupts.__file__).parent.parent)
    assert owner.stdout is not None
    try:
        helper, member = (int(w) for w in owner.stdout.readline().split())
    finally:
        owner.kill()
        owner.communicate(timeout=60)
    try:
        assert wait_until(lambda: gone(helper), 20), "the death signal did not end the helper"
        assert wait_until(lambda: gone(member), 20), "the helper's session outlived its owner"
    finally:
        for pid in (helper, member):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


INTERFACE = """<node><interface name="org.freedesktop.systemd1.Unit">
<property name="ActiveState" type="s" access="read"/></interface></node>"""


class _Connection:
    """What pydbus asks of a D-Bus connection to build a proxy: the object's interface."""

    def call_sync(self, *args: object) -> object:
        from gi.repository import GLib
        return GLib.Variant("(s)", (INTERFACE,))


@pytest.mark.parametrize("earlier", [False, True])
def test_a_signal_in_pydbus_parse_stays_a_signal(monkeypatch: pytest.MonkeyPatch,
                                                 earlier: bool) -> None:
    """pydbus parses an object's interface inside a bare `except:` that raises KeyError: a
    signal landing there (seen in CI: a learn went on for 44 s after a SIGTERM) must reach us
    as the interruption. A parse that fails while an earlier signal unwinds us is an error."""
    from xml.etree import ElementTree

    from pydbus.bus import Bus

    from autosandbox.systemd import manager

    parse = ElementTree.fromstring

    def slow_parse(text: str) -> object:
        if earlier:
            raise ElementTree.ParseError("not well-formed")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal lands in here
        return parse(text)

    monkeypatch.setattr(ElementTree, "fromstring", slow_parse)
    old = interrupts.install()
    try:
        if earlier:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
        began = time.monotonic()
        # the manager's D-Bus layer as it loads a unit, on a connection that serves the
        # unit's interface
        mgr = manager.Manager.__new__(manager.Manager)
        mgr.private, mgr.bus = False, Bus(_Connection())
        mgr.mgr = types.SimpleNamespace(LoadUnit=lambda name: "/org/freedesktop/systemd1/x")
        with pytest.raises(UserError if earlier else KeyboardInterrupt,
                           match="cannot load x.service" if earlier else None):
            mgr.unit("x.service")
        assert time.monotonic() - began < 4
        assert interrupts.interrupted() == (signal.SIGINT if earlier else signal.SIGTERM)
    finally:
        interrupts.forget()
        interrupts.restore(old)
