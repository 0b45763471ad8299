"""In a full VM: audit works and IPAddressDeny= is enforced, so learning records audit as a
source, validation reads denials from audit, and the learned IP pins are proven."""

import json
import re
from pathlib import Path

import pytest
from systemd_harness import run, wait_for
from test_learn import autosandbox, learn_json, setting, snapshot

pytestmark = pytest.mark.vm


def test_learn_uses_audit_and_ip_pins_hold(install_service):
    svc = install_service("as-nginx")
    svc.start()
    before = snapshot(svc.unit)
    result = learn_json(svc.unit, 6, "curl -fsS localhost:8081/ >/dev/null",
                        extra=("--health-url", "http://127.0.0.1:8081/"))
    assert snapshot(svc.unit) == before
    profile = json.loads(Path(result["profile"]).read_text())
    assert "audit" in profile["sources"]
    assert "tracefs:raw_syscalls" in profile["sources"]  # the fast tracer, through the gate
    assert not any("audit was not used" in n for n in result["notes"])
    # Enforced here (unlike in a container): the service still answers its loopback clients.
    assert setting(result, "IPAddressDeny") == ["any"]
    assert setting(result, "IPAddressAllow") == ["localhost"]
    assert result["validation"]["healthy"]
    assert not run(["auditctl", "-l"]).stdout.count("autosandbox-")  # rules removed


def test_trial_denials_come_from_audit(install_service):
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
        first = out["trials"][0]
        audit = [d for d in first["denials"] if d["source"] == "audit"]
        assert any(d["kind"] == "erofs" and d["path"].startswith("/srv/as-lazy/spool/")
                   for d in audit), first["denials"]
        assert re.search(r"^ReadWritePaths=/srv/as-lazy/spool$", out["dropin"], re.M)
        assert not run(["auditctl", "-l"]).stdout.count("autosandbox-")
    finally:
        svc.stop()
        run("rm -rf /srv/as-lazy")


def test_fast_tracer_sees_what_the_full_tracer_sees(install_service):
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
            assert "bpftrace:open" in profile["sources"], profile["sources"]
    assert seen["full"] <= seen["fast"], seen["full"] - seen["fast"]
    # the gate's shell (dup2 for its redirections) is all the fast tracer adds
    assert seen["fast"] - seen["full"] <= {"dup2", "dup3", "fcntl", "wait4", "getppid"}
    # every file nginx opened, with the same kinds (the served file, logs, config, libraries)
    assert opened["fast"] == opened["full"]
