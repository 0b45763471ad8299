"""Per-connection templates (Accept=yes): which processes are instances started in our window,
what the journal says about the instances a trial started, and the gate that gives each
announcement its own trace FIFO (a real shell)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from autosandbox.systemd.instances import (
    MSG_FAILED,
    MSG_STARTED,
    MSG_SUCCESS,
    Instances,
    is_template,
    parse_outcomes,
    slice_path,
)
from autosandbox.systemd.manager import ExecLine, ServiceInfo
from autosandbox.trace.gate import GateServer, instance_shim_script
from autosandbox.trace.unit import trace_dropin
from autosandbox.validate.perconn import judge_instances

SLICE = "/system.slice/system-as\\x2decho.slice"


def test_only_instances_of_the_template_started_in_the_window_are_believed() -> None:
    old = f"{SLICE}/as-echo@0-127.0.0.1:8092-127.0.0.1:5000.service"
    rule = Instances(SLICE, "as-echo", frozenset({old}))
    new = f"{SLICE}/as-echo@1-127.0.0.1:8092-127.0.0.1:5001.service"
    assert rule.unit_cgroup(new) == new
    assert rule.unit_cgroup(f"{new}/child") == new  # a child group of the instance
    for cgroup in (old, f"{old}/child",  # ran before our drop-in: not ours
                   None, SLICE, f"{SLICE}/", f"{SLICE}/as-echo@.service",
                   f"{SLICE}/other@1.service", f"{SLICE}/as-echo-x@1.service",
                   f"{SLICE}/as-echo@1.scope", "/system.slice/as-echo@1.service",
                   # a delegated subtree cannot name itself into the slice
                   f"/system.slice/x.service{SLICE}/as-echo@1.service",
                   f"{SLICE}/other.service/as-echo@1.service",
                   f"{SLICE}x/as-echo@1.service"):
        assert rule.unit_cgroup(cgroup) is None, cgroup


def test_slice_paths_and_template_names() -> None:
    assert slice_path("system-as\\x2decho.slice") == SLICE
    assert slice_path("-.slice") == ""
    assert is_template("as-echo@.service")
    assert not is_template("as-echo@1.service") and not is_template("@.service")


def _rec(unit: str, msg: str, **extra: str) -> str:
    return json.dumps({"UNIT": unit, "MESSAGE_ID": msg, **extra})


def test_the_journal_says_which_instances_a_trial_started_and_how_they_ended() -> None:
    a, b, c = (f"as-echo@{i}-x.service" for i in range(3))
    lines = [_rec(b, MSG_SUCCESS),  # ended, but started before the cursor: not ours
             _rec(a, MSG_STARTED, JOB_TYPE="start", JOB_RESULT="done"),
             _rec("as-echo.socket", MSG_STARTED, JOB_TYPE="start", JOB_RESULT="done"),
             _rec("other@1.service", MSG_STARTED, JOB_TYPE="start", JOB_RESULT="done"),
             _rec(c, MSG_STARTED, JOB_TYPE="start", JOB_RESULT="done"),
             _rec(a, MSG_SUCCESS), "not json",
             _rec(c, MSG_FAILED, UNIT_RESULT="signal")]
    out = parse_outcomes(lines, "as-echo")
    assert out.started == [a, c]
    assert out.ended == {a: "success", c: "failed: signal"}
    assert out.unfinished() == [] and out.failed() == [f"{c} (failed: signal)"]
    problems = judge_instances(out, "as-echo@.service", "as-echo.socket")
    assert problems == [f"instance {c} (failed: signal)"]
    running = parse_outcomes(lines[1:2], "as-echo")
    assert judge_instances(running, "as-echo@.service", "as-echo.socket")[0].startswith(
        "1 instance(s) did not end")
    assert judge_instances(parse_outcomes([], "as-echo"), "as-echo@.service",
                           "as-echo.socket")[0].startswith("no instance of as-echo@.service "
                                                           "was started (nothing was tested)")
    assert judge_instances(parse_outcomes(lines[1:2] + lines[5:6], "as-echo"),
                           "as-echo@.service", "as-echo.socket") == []


class _Everyone(Instances):
    """Every process taken for one instance of ours (tests run outside systemd); its two
    lines announce at once."""
    def unit_cgroup(self, cgroup: str | None) -> str | None:
        return f"{self.slice}/{self.prefix}@test.service"


def test_each_announcement_gets_its_own_gate_and_trace_file() -> None:
    """Two instances' shells announce at once: each is handed a file of its own, named on a
    gate of its own, and the program (here a fake strace) writes there."""
    with tempfile.TemporaryDirectory() as tmp:
        made: dict[int, Path] = {}

        def follow(pid: int, index: int, uid: int, gid: int) -> Path:
            made[pid] = Path(tmp) / f"trace-{pid}"
            made[pid].write_text("")
            return made[pid]

        fake = Path(tmp) / "fake-strace"
        fake.write_text('#!/bin/sh\n[ "$1" = -o ] && echo "$$ $4" > "$2"\n')
        os.chmod(fake, 0o755)
        gates = GateServer(Path(tmp), 2, follow, _Everyone(SLICE, "as-echo"))
        try:
            procs = [subprocess.Popen(["/bin/sh", "-c", instance_shim_script(gates.control, i),
                                       "shim", str(fake), "--", f"line{i}"],
                                      stdout=subprocess.PIPE, text=True) for i in (0, 1)]
            codes = [p.wait(timeout=30) for p in procs]
        finally:
            gates.close()
        assert codes == [0, 0] and gates.errors == [] and gates.refused == []
        assert sorted(made) == sorted(p.pid for p in procs)
        for i, p in enumerate(procs):
            # the program kept the shell's pid and wrote its own line to its own file
            assert made[p.pid].read_text() == f"{p.pid} line{i}\n"
        assert not list(Path(tmp).glob("gate-*"))  # each gate removed once read


def test_an_announcement_not_believed_gets_no_gate_and_its_shell_gives_up() -> None:
    followed: list[int] = []

    class _Nobody(Instances):
        def unit_cgroup(self, cgroup: str | None) -> str | None:
            return None

    def follow(pid: int, index: int, uid: int, gid: int) -> None:
        followed.append(pid)

    with tempfile.TemporaryDirectory() as tmp:
        gates = GateServer(Path(tmp), 1, follow, _Nobody(SLICE, "as-echo"))
        try:
            proc = subprocess.run(["/bin/sh", "-c", instance_shim_script(gates.control, 0, 1),
                                   "shim", "/bin/echo", "ran"], capture_output=True,
                                  text=True, timeout=60)
        finally:
            gates.close()
        assert proc.returncode == 1 and "ran" not in proc.stdout
        assert followed == [] and gates.refused_count == 1
        assert "not in an instance of as-echo@.service" in gates.refused[0]


def test_an_instance_is_traced_without_a_filter_that_would_outlive_strace(tmp_path: Path) -> None:
    """An instance still serving when learning ends is let go (unit.detach_strace), so its
    strace installs no seccomp filter (test_fast_mode.py shows what one does after); a unit's
    line, which is stopped with its strace, keeps the fast filter."""
    (tmp_path / "as-echo@.service").write_text("[Service]\nExecStart=/bin/cat\n")
    line = ExecLine("ExecStart", "/bin/cat", ("/bin/cat",), ())
    info = ServiceInfo("as-echo@.service", "loaded", "inactive", "dead", "simple", "", "",
                       False, "", str(tmp_path / "as-echo@.service"), [], "", 0, 0, [line])
    fifo = tmp_path / "trace"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    per_conn = GateServer(tmp_path / "a", 1, lambda *_: None, _Everyone(SLICE, "as-echo"))
    one = GateServer(tmp_path / "b", 1, lambda *_: None, f"{SLICE}/as-echo.service")
    try:
        instance = trace_dropin(info, {}, "/usr/bin/strace", per_conn)
        unit = trace_dropin(info, {line: fifo}, "/usr/bin/strace", one)
    finally:
        per_conn.close()
        one.close()
    assert '"-D" "-f"' in instance and '"trace=%%process,' in instance
    assert "--seccomp-bpf" not in instance
    assert "--seccomp-bpf" in unit
