"""How long the fast tracer's BPF programs run per request of a server it traces, in place.

nginx (overhead.py's: master + 2 workers, a 4 KiB file) runs under `autosandbox learn --tracer
fast`, pinned to one CPU; during one wrk run (overhead.py's clients, keep-alive or
`Connection: close`) the kernel's own BPF statistics are on (`kernel.bpf_stats_enabled`: each
program's run count and run time, /proc/PID/fdinfo of bpftrace's program fds), and off again
after, whatever happens. Printed: each program that ran at least once per hundred requests, its
runs per request and nanoseconds per run, and all programs' time per request, beside the
server's CPU time per request. The statistics add two clock reads to every run (tens of ns);
what the hooks cost outside the programs (the tracepoint, its perf event) is not in them.

    apt-get install nginx-light wrk bpftrace
    python3 benchmarks/bpf_time.py [--workload keepalive|close] [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from overhead import _measure, _prepare, _served

from autosandbox.trace import opens

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
_FIELD = re.compile(r"^(\w+):\s+(\S+)", re.M)


def programs(pid: int) -> dict[str, tuple[int, int]]:
    """Run time (ns) and run count of each BPF program `pid` holds, by its fd and tag."""
    out: dict[str, tuple[int, int]] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = dict(_FIELD.findall(Path(f"/proc/{pid}/fdinfo/{fd}").read_text()))
        except OSError:  # closed meanwhile
            continue
        out[f"{fd} ({info.get('prog_tag', '?')})"] = (int(info.get("run_time_ns", 0)),
                                                      int(info.get("run_cnt", 0)))
    return out


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """The kernel's BPF statistics on for the duration, then as they were."""
    before = STATS.read_text()
    STATS.write_text("1\n")
    try:
        yield
    finally:
        STATS.write_text(before)


def one_run(workload: str, work: Path, seconds: int, cpus: tuple[int, int],
            ) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """(server CPU us a request, all programs' ns a request, {program: (runs a request,
    ns a run)}) for one learn of the server."""
    with _served("fast", workload, work, seconds + 4, cpus[0]) as (port, root, _):
        helpers = [p for p in psutil.Process(root).children(recursive=True)
                   if p.name() == "bpftrace"]
        if not helpers:
            raise RuntimeError("learn --tracer fast started no bpftrace")
        pid = helpers[0].pid
        with bpf_stats():
            a = programs(pid)
            sample = _measure(root, port, seconds, workload, cpus[1])
            b = programs(pid)
    n = max(sample.requests, 1)
    each: dict[str, tuple[float, float]] = {}
    total = 0
    for prog, (ns, runs) in b.items():
        ns0, runs0 = a.get(prog, (0, 0))
        total += ns - ns0
        if runs - runs0 >= n / 100:
            each[prog] = ((runs - runs0) / n, (ns - ns0) / max(runs - runs0, 1))
    return sample.server_us, total / n, each


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("keepalive", "close"), default="keepalive")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    args = ap.parse_args()
    if args.runs < 1 or args.seconds < 1:
        sys.exit("bpf_time.py: --runs and --seconds are at least 1")
    if os.geteuid() != 0 or not opens.available() or not STATS.exists():
        sys.exit("bpf_time.py: needs root, bpftrace and kernel.bpf_stats_enabled")
    for tool in ("nginx", "wrk", "strace"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"bpf_time.py: {tool} is not installed (apt-get install nginx-light wrk)")
    server_us: list[float] = []
    bpf_ns: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="asb-bpftime-") as tmp:
            work = Path(tmp)
            _prepare(work)
            for i in range(args.runs):
                us, ns, each = one_run(args.workload, work, args.seconds,
                                       (args.server_cpu, args.client_cpu))
                server_us.append(us)
                bpf_ns.append(ns)
                print(f"run {i + 1}: server {us:.1f} us/request; BPF programs {ns:.0f} ns/request",
                      flush=True)
                for prog, (runs, per) in sorted(each.items()):
                    print(f"  program fd {prog}: {runs:.2f} runs/request, {per:.0f} ns/run")
                time.sleep(1)
    except (OSError, RuntimeError) as e:
        sys.exit(f"bpf_time.py: {e}")
    print(f"{args.workload}: server {statistics.median(server_us):.1f} us/request, of which the "
          f"BPF programs {statistics.median(bpf_ns):.0f} ns (median of {args.runs})")


if __name__ == "__main__":
    main()
