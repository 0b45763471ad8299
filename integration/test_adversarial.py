"""A unit's trace channels attacked while it is learned, and writes through symlinked
directories: the drop-in grants nothing the service did not need (container: the full
tracer; `vm`: the fast tracer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import daemon_reload, run

SRC = Path(__file__).resolve().parent.parent
UNIT_DIR = Path("/etc/systemd/system")
TRACERS = [pytest.param("full", id="full"),
           pytest.param("fast", id="fast", marks=pytest.mark.vm)]

FORGER = r"""
import os, re, sys, time
# /run/autosandbox/UNIT is not listable: the names are read where they show, in the
# command lines of the unit's shim and strace
NAME = re.compile(rb"/run/autosandbox/[^'\" \x00]+[.]fifo")


def fifos():
    found = set()
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                found.update(m.decode() for m in NAME.findall(f.read()))
        except OSError:
            pass
    return found


lines = ("%d socket(AF_PACKET, SOCK_RAW, 768) = 3<socket:[1]>\n"
         "%d mount(\"none\", \"/mnt\", \"tmpfs\", 0, NULL) = 0\n"
         "%d setuid(0) = 0\n")
wrote = refused = 0
start = time.monotonic()  # wait (a slow VM starts the tracers slowly) until the unit runs
while not fifos() and time.monotonic() < start + 240:
    time.sleep(0.1)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for fifo in fifos():
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            refused += 1
            continue
        try:
            if fifo.endswith("control.fifo"):  # announce ourselves as every line
                os.write(fd, b"".join(b"%d %d\n" % (os.getpid(), i) for i in range(4)))
            else:
                pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
                os.write(fd, "".join(lines % (p, p, p) for p in pids[-20:]).encode())
            wrote += 1
        except OSError:
            refused += 1
        finally:
            os.close(fd)
    time.sleep(0.05)
print(wrote, refused)
"""


UnitFile = Callable[[str, str], str]  # the fixture: (name, text) -> the unit's name


@pytest.fixture
def unit_file() -> Iterator[UnitFile]:
    made: list[str] = []

    def _make(name: str, text: str) -> str:
        path = UNIT_DIR / name
        path.write_text(text)
        made.append(name)
        daemon_reload()
        return name

    yield _make
    for name in made:
        run(["systemctl", "stop", name], timeout=90)
        run(["systemctl", "reset-failed", name])
        (UNIT_DIR / name).unlink()
    daemon_reload()


def learn(unit: str, tracer: str, seconds: float, out: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.Popen(
        [sys.executable, "-m", "autosandbox", "learn", unit, "--duration", f"{seconds}s",
         "--no-validate", "--json", "-q", "--tracer", tracer, "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/tmp")


def settings(result: Any, directive: str) -> list[str]:
    return [v for s in result["sandbox"]["settings"] if s["directive"] == directive
            for v in s["values"]]


@pytest.mark.parametrize("tracer", TRACERS)
def test_forged_trace_and_gate_writes_by_another_uid(unit_file: UnitFile, tracer: str,
                                                     tmp_path: Path) -> None:
    unit = unit_file("as-adv-sleep.service", "[Service]\nUser=nobody\n"
                     "ExecStartPre=/bin/true\nExecStart=/bin/sleep 600\n")
    proc = learn(unit, tracer, 10, tmp_path / "adv.conf")
    # uid 1 (daemon) is neither root nor the service's user
    forger = subprocess.run([sys.executable, "-c", FORGER, "8"], user=1, group=1,
                            capture_output=True, text=True, timeout=300)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{out}\n{err}"
    result = json.loads(out)
    wrote, refused = map(int, forger.stdout.split())
    assert wrote + refused > 0, forger.stderr  # it found the FIFOs
    assert refused > 0  # the trace FIFOs (0600, root or nobody) never opened for uid 1
    families = settings(result, "RestrictAddressFamilies")
    caps = settings(result, "CapabilityBoundingSet")
    assert "AF_PACKET" not in families, families
    assert not {"CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SETUID"} & set(caps), caps
    profile = json.loads((tmp_path / "adv.json").read_text())
    assert "mount" not in profile["flags"] and "AF_PACKET" not in profile["families"]
    # the unit's own lines were believed and traced (its gates opened, its FIFOs handed over)
    assert {"/usr/bin/true", "/usr/bin/sleep"} <= {os.path.realpath(p) for p in profile["execs"]}
    assert not [w for w in profile["warnings"] if "could not be followed" in w]
    if wrote:  # the control FIFO is writable by all: what was said there was not believed
        assert any("not believed" in w for w in profile["warnings"]), profile["warnings"]
    assert profile["subject"].get("unit") == unit


@pytest.mark.parametrize("tracer", TRACERS)
def test_rename_through_a_link_to_etc_grants_nothing_there(
        unit_file: UnitFile, tracer: str, tmp_path: Path) -> None:
    base = Path("/srv/as-adv-link")
    base.mkdir(exist_ok=True)
    link = base / "link"
    if not link.is_symlink():
        link.symlink_to("/etc")
    probe = Path("/etc/as-adv-probe")
    probe.write_text("x")
    try:
        unit = unit_file("as-adv-link.service", "[Service]\nExecStart=/bin/sh -c "
                         "'while :; do mv /srv/as-adv-link/link/as-adv-probe "
                         "/srv/as-adv-link/link/as-adv-probe2; mv /srv/as-adv-link/link/"
                         "as-adv-probe2 /srv/as-adv-link/link/as-adv-probe; sleep 1; done'\n")
        proc = learn(unit, tracer, 6, tmp_path / "link.conf")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{out}\n{err}"
        result = json.loads(out)
        rw = [v.lstrip("-").strip('"') for v in settings(result, "ReadWritePaths")]
        assert not [p for p in rw if p.startswith("/srv/as-adv-link")], rw  # was .../link
        assert not [p for p in rw if p in ("/", "/etc") or p.startswith("/etc/")], rw
        profile = json.loads((tmp_path / "link.json").read_text())
        assert "rename" in profile["paths"]["/etc/as-adv-probe"]
        assert any("written through a symlink" in w for w in profile["warnings"])
    finally:
        for p in (probe, Path("/etc/as-adv-probe2")):
            p.unlink(missing_ok=True)
        link.unlink()
        base.rmdir()
