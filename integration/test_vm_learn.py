"""In a full VM: audit works and IPAddressDeny= is enforced, so learning records audit as a
source, validation reads denials from audit, and the learned IP pins are proven."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from systemd_harness import InstallService, run, wait_for
from test_learn import autosandbox, learn_json, setting, snapshot

pytestmark = pytest.mark.vm


def test_learn_uses_audit_and_ip_pins_hold(install_service: InstallService) -> None:
    svc = install_service("as-nginx")
    svc.start()
    before = snapshot(svc.unit)
    result = learn_json(svc.unit, 6, "curl -fsS localhost:8081/ >/dev/null",
                        extra=("--health-url", "http://127.0.0.1:8081/"))
    assert snapshot(svc.unit) == before
    profile = json.loads(Path(result["profile"]).read_text())
    assert "audit" in profile["sources"]
    assert "tracefs:syscalls" in profile["sources"]  # the fast tracer, through the gate
    assert not any("audit was not used" in n for n in result["notes"])
    # Enforced here (unlike in a container): the service still answers its loopback clients.
    assert setting(result, "IPAddressDeny") == ["any"]
    assert setting(result, "IPAddressAllow") == ["localhost"]
    assert result["validation"]["healthy"]
    assert not run(["auditctl", "-l"]).stdout.count("autosandbox-")  # rules removed


def test_trial_denials_come_from_audit(install_service: InstallService) -> None:
    svc = install_service("as-lazy")
    try:
        svc.start()
        wait_for(lambda: run("curl -fsS localhost:8083/").returncode == 0, what="as-lazy up")
        cp = autosandbox("learn", svc.unit, "--duration", "4s", "--no-validate", "-o",
                         "/tmp/lazy.conf", "--exercise", "curl -fsS localhost:8083/")
        assert cp.returncode == 0, cp.stderr
        cp = autosandbox("validate", svc.unit, "/tmp/lazy.conf", "--json", "--settle", "2s",
                         "--exercise", "curl -fsS localhost:8083/ && curl -fsS localhost:8083/")
        assert cp.returncode == 0, cp.stderr
        out = json.loads(cp.stdout)
        assert out["trials"][0]["kind"] == "baseline" and out["trials"][0]["healthy"]
        first = out["trials"][1]  # the first candidate: the unit as found came before it
        audit = [d for d in first["denials"] if d["source"] == "audit"]
        assert any(d["kind"] == "erofs" and d["path"].startswith("/srv/as-lazy/spool/")
                   for d in audit), first["denials"]
        assert re.search(r"^ReadWritePaths=/srv/as-lazy/spool$", out["dropin"], re.M)
        assert not run(["auditctl", "-l"]).stdout.count("autosandbox-")
    finally:
        svc.stop()
        run("rm -rf /srv/as-lazy")


def test_fast_tracer_sees_what_the_full_tracer_sees(install_service: InstallService) -> None:
    svc = install_service("as-nginx")
    svc.start()
    seen = {}
    opened: dict[str, dict[str, set[str]]] = {}
    for tracer in ("full", "fast"):
        cp = autosandbox("learn", svc.unit, "-d", "8s", "--no-validate", "--tracer", tracer,
                         "--json", "--exercise", "curl -fsS localhost:8081/ >/dev/null")
        assert cp.returncode == 0, cp.stderr
        profile = json.loads(Path(json.loads(cp.stdout)["profile"]).read_text())
        seen[tracer] = set(profile["syscalls"])
        opened[tracer] = {p: set(k) - {"stat"} for p, k in profile["paths"].items()
                          if set(k) - {"stat"} and not p.startswith("/proc/")}
        if tracer == "fast":  # the image has bpftrace: opens come from the kernel
            assert "bpftrace:open" in profile["sources"], json.loads(cp.stdout)["notes"]
    assert seen["full"] <= seen["fast"], seen["full"] - seen["fast"]
    # the gate's shell (dup2 for its redirections) is all the fast tracer adds
    assert seen["fast"] - seen["full"] <= {"dup2", "dup3", "fcntl", "wait4", "getppid"}
    # every file nginx opened, with the same kinds (the served file, logs, config, libraries)
    assert opened["fast"] == opened["full"]


def test_filter_breakage_is_relaxed_by_the_call_audit_names(
        install_service: InstallService) -> None:
    """A filter missing a group the service needs: bisection blames the filter, one trial
    with the kill action lets audit name the refused call (EPERM is not audited), and only
    the group holding it is added, not the whole of @system-service."""
    svc = install_service("as-pyapp")
    svc.start()
    wait_for(lambda: run("curl -fsS localhost:8082/").returncode == 0, what="as-pyapp up")
    cp = autosandbox("learn", svc.unit, "--duration", "6s", "--no-validate", "-o",
                     "/tmp/pyapp.conf", "--exercise", "curl -fsS localhost:8082/")
    assert cp.returncode == 0, cp.stderr
    text = Path("/tmp/pyapp.conf").read_text()
    line = re.search(r"^SystemCallFilter=(.*)$", text, re.M)
    assert line is not None, text
    learned = line.group(1).split()
    assert "@network-io" in learned, learned
    broken = [g for g in learned if g != "@network-io"]
    Path("/tmp/pyapp-broken.conf").write_text(
        text.replace(line.group(0), "SystemCallFilter=" + " ".join(broken)))
    cp = autosandbox("validate", svc.unit, "/tmp/pyapp-broken.conf", "--json", "--settle", "2s",
                     "--health-url", "http://127.0.0.1:8082/")
    assert cp.returncode == 0, cp.stderr + cp.stdout
    out = json.loads(cp.stdout)
    for t in out["trials"]:  # shown with -rP: the figures in the closing notes
        print(t["trial"], t["kind"], t["healthy"], [d["text"] for d in t["denials"]][:3],
              [(r["directive"], r["to"]) for r in t["relaxed"]])
    probes = [t for t in out["trials"] if t["kind"] == "seccomp"]
    assert probes and any(d["source"] == "seccomp" for d in probes[0]["denials"]), out["trials"]
    final = re.search(r"^SystemCallFilter=(.*)$", out["dropin"], re.M)
    assert final is not None
    assert "@network-io" in final.group(1).split()
    assert "@system-service" not in final.group(1).split()
    assert set(broken) <= set(final.group(1).split())
    assert re.search(r"^SystemCallErrorNumber=EPERM$", out["dropin"], re.M)
    # Python's stat of /root/.local, refused under ProtectHome=, broke nothing: kept as learned
    home = re.search(r"^ProtectHome=.*$", text, re.M)
    assert home is not None and home.group(0) in out["dropin"].splitlines()
