"""`autosandbox learn UNIT`: real services under a real systemd, traced while a workload runs,
and left exactly as they were found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from systemd_harness import DropIn, InstalledService, InstallService, run, wait_for

SRC = Path(__file__).resolve().parent.parent
TRACE_DROPIN = "zz-autosandbox-trace.conf"


def autosandbox(*args: str, timeout: float = 300,
                check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cp = subprocess.run([sys.executable, "-m", "autosandbox", *args], capture_output=True,
                        text=True, timeout=timeout, env=env, cwd="/tmp")
    if check_rc is not None:
        assert cp.returncode == check_rc, f"rc {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return cp


def killed_at(point: str, *args: str, timeout: float = 240) -> None:
    """`autosandbox ARGS`, SIGKILLed once it waits at the named point of the code
    (AUTOSANDBOX_TEST_PAUSE=POINT:FLAG, interrupts.pause_for_tests)."""
    flag = Path(f"/run/as-paused-{point}")
    flag.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(SRC), AUTOSANDBOX_TEST_PAUSE=f"{point}:{flag}")
    proc = subprocess.Popen([sys.executable, "-m", "autosandbox", *args], env=env, cwd="/tmp",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: flag.exists() or proc.poll() is not None, timeout=timeout,
                 what=f"autosandbox {args[0]} at {point}")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.kill()
        proc.communicate()
        flag.unlink(missing_ok=True)


def spawn_learn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.Popen([sys.executable, "-m", "autosandbox", "learn", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd="/tmp")


def snapshot(unit: str) -> dict[str, object]:
    """What must be the same before and after learning."""
    props: dict[str, object] = {}
    for p in ("ExecStart", "ExecStartPre", "Type", "ActiveState", "DropInPaths", "User",
              "SystemCallFilter", "ProtectSystem"):
        value = run(["systemctl", "show", "--value", "-p", p, unit], check=True).stdout.strip()
        # ExecStart also shows run-time fields (pid, start time); keep the command only.
        props[p] = value.split(" ; start_time=")[0] if p.startswith("Exec") else value
    props["runtime_dropin"] = Path(f"/run/systemd/system/{unit}.d/{TRACE_DROPIN}").exists()
    return props


def learn_json(unit: str, seconds: float, exercise: str | None = None,
               extra: Sequence[str] = ()) -> Any:
    args = ["learn", unit, "--duration", f"{seconds}s", "--json", "--settle", "3s", *extra]
    if exercise:
        args += ["--exercise", exercise]
    cp = autosandbox(*args)
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    result = json.loads(cp.stdout)
    if "--no-validate" in extra:
        return result
    v = result["validation"]
    # The figure README reports: restarts to a validated drop-in, exposure before -> after.
    exposure = result["exposure"]
    print(f"FIGURE {unit}: validated={v['healthy']} restarts={v['restarts']} exposure "
          f"{exposure['before']['exposure']} -> {exposure['after']['exposure']}")
    assert v["healthy"] and v["restarts"] <= 6, v["trials"]
    return result


def setting(result: Any, directive: str) -> Any:  # list[str] | None; tests use it as either
    vals = [v for s in result["sandbox"]["settings"] if s["directive"] == directive
            for v in s["values"]]
    found = any(s["directive"] == directive for s in result["sandbox"]["settings"])
    return vals if found else None


def evidence(result: Any, directive: str) -> str:
    return " ".join(s["evidence"] for s in result["sandbox"]["settings"]
                    if s["directive"] == directive)


def writable(result: Any) -> set[str]:
    """Every location the drop-in makes writable, as absolute paths."""
    out = {v.lstrip("-").strip('"') for v in setting(result, "ReadWritePaths") or []}
    for directive, base in (("StateDirectory", "/var/lib/"), ("LogsDirectory", "/var/log/"),
                            ("CacheDirectory", "/var/cache/"), ("RuntimeDirectory", "/run/")):
        out |= {base + v for v in setting(result, directive) or []}
    return out


def test_learn_nginx(install_service: InstallService) -> None:
    svc = install_service("as-nginx")
    svc.start()
    before = snapshot(svc.unit)
    result = learn_json(svc.unit, 8, "for i in $(seq 20); do curl -fsS localhost:8081/ "
                                     ">/dev/null; sleep 0.2; done")
    assert snapshot(svc.unit) == before
    assert setting(result, "ProtectSystem") == ["strict"]
    assert writable(result) <= {"/var/log/as-nginx", "/run/as-nginx", "/var/cache/as-nginx"}
    # access.log, written by the workload, is covered by the unit's own LogsDirectory=
    assert "the unit's own LogsDirectory=as-nginx" in evidence(result, "ProtectSystem")
    fams = setting(result, "RestrictAddressFamilies")
    assert "AF_INET" in fams and "AF_INET6" not in fams
    assert setting(result, "IPAddressAllow") == ["localhost"]
    assert set(setting(result, "CapabilityBoundingSet")) == {"CAP_SETGID", "CAP_SETUID"}
    assert result["exposure"]["after"]["exposure"] < result["exposure"]["before"]["exposure"]
    assert result["verify_warnings"] == []
    profile = json.loads(Path(result["profile"]).read_text())
    assert profile["subject"]["unit"] == svc.unit
    assert any(p.startswith("/var/log/as-nginx/") for p in profile["paths"])


def test_learn_pyapp_state_and_logs(install_service: InstallService) -> None:
    svc = install_service("as-pyapp")
    svc.start()
    before = snapshot(svc.unit)
    result = learn_json(svc.unit, 6, "for i in 1 2 3; do curl -fsS localhost:8082/ "
                                     ">/dev/null; sleep 0.5; done")
    assert snapshot(svc.unit) == before
    # its writes are covered by the unit's own StateDirectory= and LogsDirectory=: nothing more
    assert writable(result) == set()
    assert setting(result, "StateDirectory") is None
    assert "StateDirectory=as-pyapp" in evidence(result, "ProtectSystem")
    assert "LogsDirectory=as-pyapp" in evidence(result, "ProtectSystem")
    assert setting(result, "CapabilityBoundingSet") == []
    assert setting(result, "RestrictAddressFamilies") == ["AF_INET", "AF_UNIX"] or \
        setting(result, "RestrictAddressFamilies") == ["AF_INET"]


def test_learn_redis_as_its_user(install_service: InstallService) -> None:
    svc = install_service("as-redis")
    svc.start()
    before = snapshot(svc.unit)
    result = learn_json(svc.unit, 6, "for i in 1 2 3; do printf 'PING\\r\\n' | "
                                     "timeout 2 redis-cli -p 6380 >/dev/null; sleep 0.3; done")
    assert snapshot(svc.unit) == before
    assert writable(result) <= {"/var/lib/as-redis", "/run/as-redis"}
    assert "AF_INET" in setting(result, "RestrictAddressFamilies")
    assert setting(result, "CapabilityBoundingSet") == []  # runs as redis: needs none


@pytest.mark.parametrize("name", ["as-forking", "as-notify"])
def test_forking_and_notify_services_stay_tracked(install_service: InstallService,
                                                   name: str) -> None:
    svc = install_service(name)
    svc.start()
    before = snapshot(svc.unit)
    untraced_main = int(svc.prop("MainPID"))
    proc = spawn_learn(svc.unit, "--duration", "6s", "--json", "--no-validate")
    # While traced, systemd still sees the service's own main process, alive and active
    # (waiting for the restarted instance, not the one that ran before the drop-in).
    dropin = Path(f"/run/systemd/system/{svc.unit}.d/{TRACE_DROPIN}")
    wait_for(dropin.exists, what="trace drop-in")
    wait_for(lambda: svc.prop("ActiveState") == "active"
             and int(svc.prop("MainPID")) not in (0, untraced_main), what="traced unit active")
    main = int(svc.prop("MainPID"))
    assert main > 0
    exe = os.readlink(f"/proc/{main}/exe")
    assert "strace" not in exe, exe
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert snapshot(svc.unit) == before
    result = json.loads(out)
    assert any(s["directive"] == "ProtectSystem" for s in result["sandbox"]["settings"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_restores_the_unit(install_service: InstallService, sig: signal.Signals) -> None:
    svc = install_service("as-nginx")
    svc.start()
    before = snapshot(svc.unit)
    proc = spawn_learn(svc.unit, "--duration", "5m")
    dropin = Path(f"/run/systemd/system/{svc.unit}.d/{TRACE_DROPIN}")
    wait_for(dropin.exists, what="trace drop-in")
    wait_for(lambda: svc.prop("ActiveState") == "active", what="traced unit active")
    time.sleep(1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert out == ""  # nothing is learned from a cut trace (integration/test_signals.py)
    assert snapshot(svc.unit) == before


def test_one_learn_at_a_time(install_service: InstallService) -> None:
    svc = install_service("as-nginx")
    svc.start()
    before = snapshot(svc.unit)
    proc = spawn_learn(svc.unit, "--duration", "5m", "--no-validate")
    dropin = Path(f"/run/systemd/system/{svc.unit}.d/{TRACE_DROPIN}")
    wait_for(dropin.exists, what="trace drop-in")
    second = autosandbox("learn", svc.unit, "--duration", "5s")
    assert second.returncode == 2 and "already working on" in second.stderr
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert snapshot(svc.unit) == before


def test_sigkill_then_reset(install_service: InstallService) -> None:
    svc = install_service("as-nginx")
    svc.start()
    before = snapshot(svc.unit)
    proc = spawn_learn(svc.unit, "--duration", "5m")
    dropin = Path(f"/run/systemd/system/{svc.unit}.d/{TRACE_DROPIN}")
    wait_for(dropin.exists, what="trace drop-in")
    wait_for(lambda: svc.prop("ActiveState") == "active", what="traced unit active")
    proc.kill()
    proc.communicate(timeout=30)
    assert dropin.exists()
    if run(["auditctl", "-s"]).returncode == 0 and not Path("/run/systemd/container").exists():
        assert "autosandbox-learn-" in run(["auditctl", "-l"]).stdout  # left by SIGKILL
    refused = autosandbox("learn", svc.unit, "--duration", "5s")
    assert refused.returncode == 2 and "autosandbox reset" in refused.stderr
    reset = autosandbox("reset", svc.unit, check_rc=0)
    assert not dropin.exists()
    rules = run(["auditctl", "-l"]).stdout
    assert "autosandbox-" not in rules, f"pid {proc.pid}: {reset.stderr}\n{rules}"
    assert snapshot(svc.unit) == before
    # the service answers again, untraced
    wait_for(lambda: run("curl -fsS localhost:8081/").returncode == 0, what="nginx answers")


def _kill_in_second_stop(proc: subprocess.Popen[str], svc: InstalledService,
                         nth: int = 2) -> None:
    """SIGKILL `proc` while the unit is in its second stop: the first is the restart that
    puts it under our drop-in, the second leaves it stopped (the trace's end, or a trial's
    stop before its start); the stop job then finishes without us. `nth`: another stop."""
    episodes, was = 0, None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        state = svc.prop("ActiveState")
        if state == "deactivating" and was != "deactivating":
            episodes += 1
            if episodes == nth:
                proc.kill()
                proc.communicate(timeout=30)
                return
        was = state
        time.sleep(0.05)
    _, err = proc.communicate(timeout=30)
    pytest.fail(f"no second stop seen (exit {proc.returncode}): {err[-500:]}")


@pytest.mark.parametrize("what", ["learn", "validate", "apply"])
def test_sigkill_while_we_had_it_stopped_then_reset_starts_it(
        install_service: InstallService, drop_in: DropIn, tmp_path: Path, what: str) -> None:
    """Seen in CI (VM, signal trial 3): learn killed at a moment it had the unit stopped;
    `reset` removed everything else but left the service dead."""
    svc = install_service("as-pyapp")
    drop_in(svc.unit, "50-slow-stop", "[Service]\nExecStop=/bin/sleep 2\n", runtime=False)
    svc.start()
    before = snapshot(svc.unit)
    if what == "learn":
        proc = spawn_learn(svc.unit, "--duration", "3s", "--no-validate")
    else:
        cand = tmp_path / "cand.conf"
        cand.write_text("[Service]\nProtectHome=yes\n")
        env = dict(os.environ, PYTHONPATH=str(SRC))
        args = (["validate", svc.unit, str(cand), "--settle", "1s", "--max-trials", "1"]
                if what == "validate" else
                ["apply", "--force", svc.unit, str(cand), "--settle", "3s"])
        proc = subprocess.Popen([sys.executable, "-m", "autosandbox", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd="/tmp")
    # apply stops the unit once (its restart under the new drop-in): killed while it settles
    _kill_in_second_stop(proc, svc, nth=1 if what == "apply" else 2)
    if what == "apply":
        time.sleep(1)
    log = Path("/var/log/as-pyapp/app.log")
    if what != "learn":
        # as a trial's sandbox can (UMask=, a chown): the run recorded the disk as found
        mode = log.stat().st_mode & 0o7777
        log.chmod(0o600)
    began = time.monotonic()
    reset = autosandbox("reset", svc.unit, check_rc=0)
    print(f"reset took {time.monotonic() - began:.1f}s: {reset.stderr}")
    assert f"restarted {svc.unit}" in reset.stderr, reset.stderr
    if what != "learn":
        assert f"put back {log} as found (since changed: mode {mode:04o} -> 0600)" \
            in reset.stderr
        assert log.stat().st_mode & 0o7777 == mode
    assert snapshot(svc.unit) == before, reset.stderr
    wait_for(lambda: run("curl -fsS localhost:8082/").returncode == 0, what="as-pyapp answers")


def test_unit_with_its_own_filter_and_strict_can_be_learned(
        install_service: InstallService) -> None:
    svc = install_service("as-pyapp")
    own = Path(f"/etc/systemd/system/{svc.unit}.d/10-own.conf")
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("[Service]\nProtectSystem=strict\nSystemCallFilter=@system-service\n")
    try:
        run(["systemctl", "daemon-reload"], check=True)
        svc.start()
        before = snapshot(svc.unit)
        result = learn_json(svc.unit, 5, "curl -fsS localhost:8082/ >/dev/null",
                            extra=("--no-validate",))
        assert snapshot(svc.unit) == before
        omitted = {o["directive"]: o["why"] for o in result["sandbox"]["omitted"]}
        assert "already sets" in omitted["SystemCallFilter"]  # never loosened silently
        assert "already sets" in omitted["ProtectSystem"]
        assert setting(result, "SystemCallFilter") is None
        # The trace saw its writes, all below the unit's own StateDirectory=/LogsDirectory=,
        # which systemd already makes writable: nothing more to grant, no directive repeated.
        profile = json.loads(Path(result["profile"]).read_text())
        assert any(p.startswith("/var/lib/as-pyapp/") for p in profile["paths"])
        assert setting(result, "StateDirectory") is None
        assert setting(result, "ReadWritePaths") is None
    finally:
        own.unlink()
        own.parent.rmdir()
        run(["systemctl", "daemon-reload"])


def test_clear_errors() -> None:
    cp = autosandbox("learn", "no-such-unit.service", "--duration", "1s")
    assert cp.returncode == 2 and "does not exist" in cp.stderr
    assert "Traceback" not in cp.stderr
    cp = autosandbox("learn", "getty@.service", "--duration", "1s")
    assert cp.returncode == 2 and "template" in cp.stderr
    cp = autosandbox("learn", "as-nothing.socket", "--duration", "1s")  # sockets are learnable
    assert cp.returncode == 2 and "as-nothing.socket does not exist" in cp.stderr
    cp = autosandbox("learn", "as-nothing.target", "--duration", "1s")
    assert cp.returncode == 2 and "not a service" in cp.stderr
    cp = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
              "-m", "autosandbox", "learn", "ssh.service", "--duration", "1s"],
             env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert cp.returncode == 2 and "needs root" in cp.stderr
