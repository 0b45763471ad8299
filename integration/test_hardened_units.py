"""A unit that already sandboxes itself (Debian's redis-server.service: NoExecPaths=/,
its own SystemCallFilter=, an empty CapabilityBoundingSet=, PrivateUsers=) can still be
traced, and what it sets by itself is kept. Seen before the fix: every start under tracing
failed with "Failed to locate executable /bin/sh: Permission denied" (exit 2, nothing
learned). Services: integration/services/as-kinds (as-hard.service)."""

from __future__ import annotations

import re

from systemd_harness import UNIT_DIR, unit_property
from test_learn import autosandbox
from test_unit_kinds import QUICK, kinds, learned, no_trace_left  # noqa: F401 (a fixture)


def test_a_self_sandboxed_unit_is_learned_and_keeps_its_own(kinds) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    unit = "as-hard.service"
    kinds.start(unit)
    stock = (UNIT_DIR / unit).read_bytes()
    out = learned(autosandbox("learn", unit, *QUICK))
    assert out["validated"], out["notes"]
    dropin = out["dropin"]
    # what the unit sets by itself stays its own: never re-set, never loosened
    for own in ("ExecPaths", "NoExecPaths", "SystemCallFilter"):
        assert not re.search(rf"^{own}=", dropin, re.M), (own, dropin)
    caps = re.findall(r"^CapabilityBoundingSet=(.*)$", dropin, re.M)
    assert caps in ([], [""]), caps  # the unit's empty set, at most said again
    assert any("the unit already sets SystemCallFilter" in o["why"]
               for o in out["sandbox"]["omitted"]), out["sandbox"]["omitted"]
    assert re.search(r"^ProtectHome=", dropin, re.M), dropin  # and more than it had
    assert (UNIT_DIR / unit).read_bytes() == stock
    no_trace_left(unit)
    assert unit_property(unit, "ActiveState") == "active"
    cp = autosandbox("apply", unit, "--settle", "1s")
    assert cp.returncode == 0, cp.stderr
    assert unit_property(unit, "ActiveState") == "active"
    assert autosandbox("revert", unit).returncode == 0
