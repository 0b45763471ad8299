"""--template (issue #16): a drop-in learned on one instance of a template is written for
every instance, each with its own paths (%I), and another instance works under it.
Services: integration/services/as-kinds (as-inst@.service writes /srv/as-inst/%I/beat)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from systemd_harness import UNIT_DIR, run, unit_property, wait_for
from test_learn import autosandbox
from test_unit_kinds import QUICK, kinds, learned, no_trace_left  # noqa: F401 (a fixture)

DATA = Path("/srv/as-inst")


def test_a_template_learned_on_one_instance_serves_another(kinds) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    srv_existed = Path("/srv").exists()
    for site in ("site/a", "site/b"):
        (DATA / site).mkdir(parents=True)
    unit, other = "as-inst@site-a.service", "as-inst@site-b.service"
    installed = UNIT_DIR / "as-inst@.service.d" / "50-autosandbox.conf"
    try:
        kinds.start(unit)
        out = learned(autosandbox("learn", unit, "--template", *QUICK))
        assert out["validated"], out["notes"]
        # the instance's own directory, written for every instance; nothing of site/a left
        assert re.search(r"^ReadWritePaths=.*/srv/as-inst/%I\b", out["dropin"], re.M), \
            out["dropin"]
        settings = [ln for ln in out["dropin"].splitlines() if not ln.startswith("#")]
        assert not [ln for ln in settings if "/srv/as-inst/site/a" in ln], settings
        assert any("written for every instance" in n for n in out["notes"]), out["notes"]
        assert out["exposure"]["after"]["exposure"] < out["exposure"]["before"]["exposure"]
        no_trace_left(unit, "as-inst@.service")
        cp = autosandbox("apply", unit, "--template", "--settle", "1s")
        assert cp.returncode == 0, cp.stderr
        assert re.search(r"^ReadWritePaths=.*/srv/as-inst/%I\b", installed.read_text(), re.M)
        # another instance gets its own directory, not the first one's, and works
        kinds.start(other)
        assert unit_property(other, "ProtectSystem") == "strict"
        assert "/srv/as-inst/site/b" in unit_property(other, "ReadWritePaths")
        assert "/srv/as-inst/site/a" not in unit_property(other, "ReadWritePaths")
        before = (DATA / "site/b/beat").stat().st_mtime if (DATA / "site/b/beat").exists() \
            else 0.0
        wait_for(lambda: (DATA / "site/b/beat").is_file()
                 and (DATA / "site/b/beat").stat().st_mtime > before,
                 timeout=60, what="the second instance's work under the drop-in")
        assert unit_property(other, "ActiveState") == "active", kinds.diagnostics(other)
        # A root service under ProtectSystem=strict cannot write /run (systemd 252 left it
        # writable beside ProtectKernelTunables=: a unit file in /run/systemd/system/ would
        # have been loaded at the next daemon-reload). Seen from its own mount namespace.
        pid = unit_property(other, "MainPID")
        probe = run(["nsenter", "-t", pid, "-m", "--", "/bin/sh", "-c",
                     "touch /run/systemd/system/as-escape.service"])
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe
        assert not Path("/run/systemd/system/as-escape.service").exists()
        cp = autosandbox("revert", unit, "--template")
        assert cp.returncode == 0, cp.stderr
        assert not installed.exists() and not installed.parent.exists()
    finally:
        for name in (unit, other):
            run(["systemctl", "stop", name])
        shutil.rmtree(UNIT_DIR / "as-inst@.service.d", ignore_errors=True)
        shutil.rmtree("/var/lib/autosandbox/as-inst@.service", ignore_errors=True)
        shutil.rmtree(DATA, ignore_errors=True)
        if not srv_existed:
            shutil.rmtree("/srv", ignore_errors=True)
