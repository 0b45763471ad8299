"""What bpftrace 0.17's start costs (issue #14: under qemu TCG the fast tracer's program did not
start within a minute): each `args->` read costs ~21 listings of every kernel event, and left
to itself bpftrace loads and searches the BTF of every module."""

import re
from pathlib import Path

import pytest

from autosandbox.trace import kernel, opens


@pytest.mark.skipif(not opens.available(),
                    reason="needs bpftrace, root and the syscall tracepoints")
def test_each_probe_reads_each_field_once() -> None:
    text = opens.script((), "/run/autosandbox/web.service/gate-")
    probes = re.split(r"\n(?=tracepoint:|BEGIN|END)", text)
    assert len(probes) > 10
    for probe in probes:
        fields = re.findall(r"args->(\w+)", probe)
        assert len(fields) == len(set(fields)), probe


@pytest.mark.skipif(not opens.available() or not kernel.BTF.exists(),
                    reason="needs bpftrace, root, the syscall tracepoints and BTF")
def test_bpftrace_reads_the_kernels_types_only() -> None:
    with opens.OpenTracer(root_pids=()) as tracer:
        environ = Path(f"/proc/{tracer._proc.pid}/environ").read_bytes().split(b"\0")
    assert f"BPFTRACE_BTF={kernel.BTF}".encode() in environ
