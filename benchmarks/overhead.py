"""Throughput and p99 latency of a server while autosandbox learns it, as ratios of untraced.

Workloads (--workload, comma-separated): 'keepalive' and 'close' are nginx (master + 2 workers,
4 KiB static file) driven by `wrk -t2 -c32 --latency` over keep-alive connections or with
`Connection: close` (a new connection per request); 'threads' is a threaded Python server (a
pool of threads accepting on one socket, each request building and serializing a few thousand
objects) under `Connection: close`. Each is run untraced and while `autosandbox learn` traces
it with each tracer ('full': strace stops on every call; 'fast': strace --seccomp-bpf on the
calls the kernel tracer does not record, the syscall set from tracefs, opens and the hot calls
from bpftrace when installed); the parts of fast, to see which costs what: 'strace' (its strace
alone), 'tracefs' (that strace + the tracefs syscall-set instance; the rest of fast is
bpftrace), 'kernel' (fast without strace: the tracefs instance and the BPF program on the
server itself) and 'bpf' (the program alone). Modes are interleaved (every other round in
reverse order), ratios measured in one run: median of --runs each, and the median of each
round's ratio to its untraced run (paired). A round during which the hypervisor gave more than
--max-steal % of the CPUs to other guests is run again (at most --retakes times; counted).
The server side (learn, its helpers and the server) is pinned to one CPU, wrk to another
(--server-cpu, --client-cpu): strace timings swing 3x when tracer and tracee are placed apart.
The learner's cost is the CPU time of autosandbox and its helpers (strace, bpftrace; not the
server) per second traced, and their peak RSS (psutil). The server's own CPU time per request
(user + system, where the BPF programs, the seccomp filter and the tracepoints run) is what
tracing costs each request, apart from how a shared host schedules the run; its ratio to
untraced is printed beside the rate's.
With --side-by-side, each round runs an untraced server and a traced one at once, both on the
server CPU (the scheduler shares it between them), each driven by a wrk with half of the
clients: a host that slows one down in the middle of a run slows the other alike, where one
after the other its swings (steal, and more than steal: untraced runs 13-17 us a request apart
with none) are as large as what is measured. Tracer 'none' runs both untraced: the method's own
error. Steadier, but not the same quantity: the untraced one pays what the tracer costs every
other process (benchmarks/syscall_cost.py's bystander), and two servers sharing a CPU may not
pay what one pays alone; so its ratio may err towards 1. It compares versions of a tracer; the
ratio to a server alone is the default mode's.
With --unit, nginx runs as a systemd service and `autosandbox learn UNIT` traces it (in the
CI VM: AUTOSANDBOX_CI_VM_COMMAND='python3 benchmarks/overhead.py --unit' integration/run-vm).

    apt-get install nginx-light wrk   # or nginx
    python3 benchmarks/overhead.py [--workload keepalive,close,threads] [--runs 3]
        [--seconds 10] [--tracers full,fast,strace,tracefs,kernel,bpf]
        [--side-by-side] [--unit]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
    }}
}}
"""
# A threaded, allocation-heavy server: 4 threads accept on one socket (no thread per
# connection: every new thread is a ptrace event stop for strace -f whatever it traces), each
# request builds a few thousand objects and serializes them.
THREADED_SERVER = """
import json, socket, sys, threading
port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(512)
def serve():
    while True:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            items = [{"id": i, "name": "item%d" % i, "tags": [str(i)] * 3} for i in range(300)]
            body = json.dumps(items).encode()[:4096]
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n"
                         b"Connection: close\\r\\n\\r\\n" % len(body) + body)
threads = [threading.Thread(target=serve, daemon=True) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""
WORKLOADS = ("keepalive", "close", "threads")


@dataclass
class Sample:
    rate: float  # requests/s
    p99_ms: float
    requests: int = 0  # answered during the run
    # CPU time of the server's own processes (user + system: the BPF programs, the seccomp
    # filter and the tracepoints run in its system time) per request answered. Less at the
    # mercy of a shared host's scheduling than the rate: what tracing costs each request.
    server_us: float = 0.0
    cpu_per_s: float = 0.0  # CPU seconds of the learner and its helpers per second traced
    rss_mib: float = 0.0  # peak RSS of autosandbox itself
    helpers_rss_mib: float = 0.0  # peak RSS of strace + bpftrace together
    # Anonymous memory (RssAnon: RSS without the shared libraries' file pages, 73 MiB of
    # bpftrace's LLVM) of autosandbox + strace + bpftrace together: first and last sample of
    # the run (flat, or growing with the traffic?) and the peak
    anon_first_mib: float = 0.0
    anon_last_mib: float = 0.0
    anon_peak_mib: float = 0.0
    # Share of the machine's CPU time the hypervisor gave to other guests during the run (the
    # "steal" of /proc/stat): a run that lost much of it measured the host, not the tracer
    steal_pct: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _cpu_ticks() -> tuple[int, int]:
    """(stolen, all) clock ticks of the machine's CPUs so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def _steal(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100.0 * (after[0] - before[0]) / max(after[1] - before[1], 1)


def _wrk(port: int, seconds: int, workload: str, cpu: int | None, share: int = 1) -> Sample:
    """`share` 2: half the clients (two servers side by side, one wrk each: the same load)."""
    header = [] if workload == "keepalive" else ["-H", "Connection: close"]
    path = "/index.html" if workload != "threads" else "/"
    ticks = _cpu_ticks()
    out = subprocess.run(["wrk", f"-t{2 // share}", f"-c{32 // share}", f"-d{seconds}s",
                          "--latency", *header,
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True,
                         preexec_fn=_pinned(cpu)).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    total = re.search(r"^\s*(\d+) requests in ", out, re.M)
    if m is None or p99 is None or total is None:
        raise RuntimeError(f"wrk printed no rate, total or p99:\n{out}")
    return Sample(float(m.group(1)), float(p99.group(1)) * _UNITS[p99.group(2)],
                  int(total.group(1)), steal_pct=_steal(ticks, _cpu_ticks()))


def _sides(root: int) -> tuple[list[Any], list[Any]]:
    """The processes under `root`, as (learner, server): learn, its helpers and strace; what
    strace runs. With no strace in the tree (untraced) all of it is the server."""
    learner: list[Any] = []
    server: list[Any] = []
    try:
        todo = [(psutil.Process(root), False)]
    except psutil.Error:
        return [], []
    while todo:
        p, traced = todo.pop()
        try:
            children = p.children()
            (server if traced else learner).append(p)
            todo.extend((c, traced or p.name() == "strace") for c in children)
        except psutil.Error:
            continue
    return (learner, server) if server else ([], learner)


def _server_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of each process of the server."""
    out: dict[int, float] = {}
    for p in _sides(root)[1]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def _measure(root: int, port: int, seconds: int, workload: str, cpu: int | None,
             share: int = 1) -> Sample:
    """wrk's run, and the server's CPU time per request during it."""
    before = _server_cpu(root)
    sample = _wrk(port, seconds, workload, cpu, share)
    after = _server_cpu(root)
    used = sum(t - before[pid] for pid, t in after.items() if pid in before)
    sample.server_us = used / max(sample.requests, 1) * 1e6
    return sample


class LearnerCost:
    """CPU and peak RSS of `learn` and its helpers (not the traced program: strace's
    descendants), sampled while wrk runs."""

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.start = time.monotonic()
        self.cpu0 = self._cpu()
        self.rss = 0.0
        self.helpers_rss = 0.0
        self.anon: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _procs(self) -> list[Any]:
        return _sides(self.root)[0]

    def _cpu(self) -> dict[int, float]:
        cpu: dict[int, float] = {}
        for p in self._procs():
            try:
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue
        return cpu

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            helpers = anon = 0.0
            for p in self._procs():
                try:
                    rss = p.memory_info().rss / 2**20
                    anon += _rss_anon_mib(p.pid)
                    if p.pid == self.root:
                        self.rss = max(self.rss, rss)
                    else:
                        helpers += rss
                except (psutil.Error, OSError):
                    continue
            self.helpers_rss = max(self.helpers_rss, helpers)
            self.anon.append(anon)

    def finish(self, sample: Sample) -> Sample:
        self._stop.set()
        self._thread.join(5)
        cpu1 = self._cpu()
        used = sum(t - self.cpu0.get(pid, 0.0) for pid, t in cpu1.items())
        sample.cpu_per_s = used / max(time.monotonic() - self.start, 1e-6)
        sample.rss_mib, sample.helpers_rss_mib = self.rss, self.helpers_rss
        if self.anon:
            sample.anon_first_mib, sample.anon_last_mib = self.anon[0], self.anon[-1]
            sample.anon_peak_mib = max(self.anon)
        return sample


def _rss_anon_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server_argv(workload: str, workdir: Path, port: int) -> list[str]:
    if workload == "threads":
        return [sys.executable, str(workdir / "threaded_server.py"), str(port)]
    (workdir / "nginx.conf").write_text(CONF.format(dir=workdir, port=port))
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(workdir / "nginx.conf"),
            "-g", "daemon off;"]


# Parts of the fast tracer alone, to see which costs what: 'strace' is strace with the fast
# tracer's options and call set (the one it uses beside bpftrace), no kernel tracer; 'tracefs'
# adds the tracefs syscall-set instance, following strace from before it starts the server;
# 'kernel' is the fast tracer without strace: the server itself, followed by the tracefs
# instance and the whole BPF program from before it starts (what a fast path with no ptrace
# and no seccomp filter would cost, before recording what strace still records); 'bpf' is the
# BPF program alone on the server.
# Their learner cost is strace's alone (the instance's and bpftrace's readers are ours).
PARTS = ("strace", "tracefs", "kernel", "bpf")


def _start_part(mode: str, server: list[str], stack: contextlib.ExitStack,
                cpu: int | None) -> subprocess.Popen[bytes]:
    sys.path.insert(0, str(ROOT))  # as the learn modes run it: this checkout's autosandbox
    from autosandbox.trace.command import pipe_shim, strace_argv
    from autosandbox.trace.opens import OpenTracer
    from autosandbox.trace.tracefs import SyscallSetTracer
    gate_r, gate_w = os.pipe()
    shim = pipe_shim(gate_r, server if mode in ("kernel", "bpf") else strace_argv(
        shutil.which("strace") or "strace", Path(os.devnull), server, fast=True,
        kernel_opens=True))
    proc = subprocess.Popen(shim, pass_fds=(gate_r,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_pinned(cpu))
    os.close(gate_r)
    if mode in ("tracefs", "kernel"):  # every task of the shim's tree is the program here
        stack.enter_context(SyscallSetTracer(proc.pid, lambda pid: True))
    if mode in ("kernel", "bpf"):  # the shim is the server from its exec on; forks inherit @p
        stack.enter_context(OpenTracer(program_pids=[proc.pid]))
    os.write(gate_w, b"go\n")
    os.close(gate_w)
    return proc


def _prepare(work: Path) -> None:
    """A server's directory: the static file, the threaded server."""
    (work / "www").mkdir(parents=True)
    (work / "www" / "index.html").write_bytes(b"x" * 4096)
    (work / "threaded_server.py").write_text(THREADED_SERVER)
    os.chmod(work, 0o755)


@contextlib.contextmanager
def _served(mode: str, workload: str, workdir: Path, seconds: int, cpu: int | None,
            ) -> Iterator[tuple[int, int, LearnerCost | None]]:
    """The server, untraced or traced by `mode`, listening: (its port, the root of its
    process tree, the learner's cost when traced). Stopped at the end."""
    port = _free_port()
    server = _server_argv(workload, workdir, port)
    if mode in PARTS:
        with contextlib.ExitStack() as stack:
            proc = _start_part(mode, server, stack, cpu)
            try:
                _wait_port(port, timeout=60)
                time.sleep(1)
                yield port, proc.pid, LearnerCost(proc.pid)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
        return
    if mode == "untraced":
        argv = server
    else:
        argv = [sys.executable, "-m", "autosandbox", "learn", "-q", "--tracer", mode,
                "--duration", f"{seconds + 8}s", "-o", str(workdir / f"{mode}.conf"), "--",
                *server]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True, preexec_fn=_pinned(cpu))
    try:
        _wait_port(port, timeout=60)
        time.sleep(1)
        yield port, proc.pid, LearnerCost(proc.pid) if mode != "untraced" else None
    finally:
        if mode == "untraced":
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)  # learn stops the server itself at the end of --duration


def run_once(mode: str, workload: str, workdir: Path, seconds: int,
             cpus: tuple[int | None, int | None]) -> Sample:
    with _served(mode, workload, workdir, seconds, cpus[0]) as (port, root, cost):
        sample = _measure(root, port, seconds, workload, cpus[1])
        return cost.finish(sample) if cost is not None else sample


def run_side_by_side(mode: str, workload: str, work: Path, seconds: int,
                     cpus: tuple[int | None, int | None]) -> tuple[Sample, Sample]:
    """An untraced server and one traced by `mode` ("none": untraced too, the method's own
    error) share the server CPU, each driven by half of the clients at the same time: what
    the host does to the one it does to the other. (Sample untraced, sample traced.)"""
    with contextlib.ExitStack() as stack:
        traced = stack.enter_context(_served("untraced" if mode == "none" else mode, workload,
                                             work / "b", seconds, cpus[0]))
        plain = stack.enter_context(_served("untraced", workload, work / "a", seconds, cpus[0]))

        def one(port: int, root: int) -> Sample:
            return _measure(root, port, seconds, workload, cpus[1], share=2)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(one, port, root) for port, root, _ in (plain, traced)]
            base, sample = (f.result() for f in futures)
        cost = traced[2]
        return base, cost.finish(sample) if cost is not None else sample


UNIT = "autosandbox-bench-nginx.service"
UNIT_FILE = Path("/run/systemd/system") / UNIT


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=True, capture_output=True)


def run_unit_once(mode: str, workload: str, workdir: Path, seconds: int, port: int) -> Sample:
    """The same nginx as a systemd service; traced by `autosandbox learn UNIT`."""
    if mode == "untraced":
        _wait_port(port)
        return _wrk(port, seconds, workload, None)
    learn = subprocess.Popen(
        [sys.executable, "-m", "autosandbox", "learn", UNIT, "-q", "--no-validate",
         "--tracer", mode, "--duration", f"{seconds + 15}s", "-o", str(workdir / f"{mode}.conf"),
         "--profile-out", str(workdir / f"{mode}.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    dropin = Path("/run/systemd/system") / f"{UNIT}.d" / "zz-autosandbox-trace.conf"
    deadline = time.monotonic() + 120
    while not dropin.exists():  # the traced restart has begun
        if learn.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"learn did not start tracing: {learn.communicate()[1]}")
        time.sleep(0.1)
    time.sleep(3)  # past the restart
    _wait_port(port, timeout=60)
    time.sleep(1)
    try:
        cost = LearnerCost(learn.pid)
        return cost.finish(_wrk(port, seconds, workload, None))
    finally:
        _, err = learn.communicate(timeout=300)
        if learn.returncode != 0:
            raise RuntimeError(f"learn failed ({learn.returncode}): {err}")


def _median(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(x, attr) for x in samples))


def report_memory(workload: str, results: dict[str, list[Sample]]) -> None:
    """--no-untraced: the learner's cost alone (a long run's memory), no ratios."""
    for mode, samples in results.items():
        for x in samples:
            print(f"{workload} {mode}: {x.rate:,.0f} requests/s; learner "
                  f"{x.cpu_per_s:.2f} CPU s/s, RSS {x.rss_mib:.0f} MiB (+ strace/bpftrace "
                  f"{x.helpers_rss_mib:.0f} MiB); all of them anonymous {x.anon_first_mib:.0f}"
                  f" MiB at the start, {x.anon_last_mib:.0f} MiB at the end, peak "
                  f"{x.anon_peak_mib:.0f} MiB")


def report(workload: str, results: dict[str, list[Sample]], runs: int,
           beside: str | None = None) -> None:
    """`beside`: the untraced runs were side by side with this mode's."""
    if "untraced" not in results:
        report_memory(workload, results)
        return
    base = results["untraced"]
    rate, p99 = _median(base, "rate"), _median(base, "p99_ms")
    spread = f"{min(x.rate for x in base):,.0f}-{max(x.rate for x in base):,.0f}"
    us = _median(base, "server_us")
    server = f", server CPU {us:.1f} us/request" if us > 0 else ""  # --unit: not measured
    steal = [x.steal_pct for samples in results.values() for x in samples]
    name = f"{workload}, side by side with {beside}" if beside else workload
    print(f"{name}: untraced {rate:,.0f} requests/s ({spread}), p99 {p99:.2f} ms{server} "
          f"(median of {runs}); steal median {statistics.median(steal):.1f}%, "
          f"max {max(steal):.1f}%")
    for mode, samples in results.items():
        if mode == "untraced":
            continue
        r, l99 = _median(samples, "rate"), _median(samples, "p99_ms")
        # Each run's ratio against the untraced run of its round: a host whose speed drifts
        # between rounds (a shared VM) moves both alike
        paired = statistics.median(x.rate / b.rate for x, b in zip(samples, base, strict=True))
        paired99 = statistics.median(x.p99_ms / b.p99_ms
                                     for x, b in zip(samples, base, strict=True))
        cost = _median(samples, "server_us")
        each = [x.server_us / b.server_us for x, b in zip(samples, base, strict=True)
                if b.server_us > 0]
        server = (f"server CPU {cost:.1f} us/request, {cost / us:.2f}x (paired "
                  f"{statistics.median(each):.2f}x); " if us > 0 and each else "")
        line = (f"  {mode:>5}: {r:,.0f} requests/s, ratio {r / rate:.2f}x (paired "
                f"{paired:.2f}x); p99 {l99:.2f} ms, {l99 / p99:.2f}x (paired {paired99:.2f}x)")
        if mode == "none":  # side by side, both untraced: no learner
            print(f"{line}; {server.rstrip('; ')}")
            continue
        print(f"{line}; {server}"
              f"learner {_median(samples, 'cpu_per_s'):.2f} CPU s/s, "
              f"RSS {max(x.rss_mib for x in samples):.0f} MiB (+ strace/bpftrace "
              f"{max(x.helpers_rss_mib for x in samples):.0f} MiB); all of them anonymous "
              f"{_median(samples, 'anon_first_mib'):.0f} MiB at the start, "
              f"{_median(samples, 'anon_last_mib'):.0f} MiB at the end, peak "
              f"{max(x.anon_peak_mib for x in samples):.0f} MiB")


def measure(workload: str, modes: tuple[str, ...] | list[str], args: argparse.Namespace,
            work: Path, port: int, cpus: tuple[int | None, int | None],
            ) -> tuple[dict[str, list[Sample]], int]:
    """--runs rounds of every mode; and how many rounds were run again for the host's steal."""
    results: dict[str, list[Sample]] = {}
    retaken = 0
    for i in range(args.runs):
        # Interleaved, every other round backwards: a host drifting within a round moves
        # untraced and traced alike
        order = list(modes) if i % 2 == 0 else list(reversed(modes))
        for attempt in range(args.retakes + 1):
            done: dict[str, Sample] = {}
            for mode in order:
                if args.side_by_side:  # untraced beside each tracer: "untraced-MODE"
                    done[f"untraced-{mode}"], done[mode] = run_side_by_side(
                        mode, workload, work, args.seconds, cpus)
                else:
                    done[mode] = (run_unit_once(mode, workload, work, args.seconds, port)
                                  if args.unit
                                  else run_once(mode, workload, work, args.seconds, cpus))
                for name in (f"untraced-{mode}", mode) if args.side_by_side else (mode,):
                    sample = done[name]
                    print(f"{workload} run {i + 1} {name:>8}: {sample.rate:10.0f} "
                          f"requests/s, p99 {sample.p99_ms:.2f} ms, server CPU "
                          f"{sample.server_us:.1f} us/request, steal "
                          f"{sample.steal_pct:.1f}%", file=sys.stderr, flush=True)
            worst = max(x.steal_pct for x in done.values())
            if worst <= args.max_steal or attempt == args.retakes:
                break
            retaken += 1
            print(f"{workload} run {i + 1}: the hypervisor took {worst:.1f}% of "
                  "the CPUs during it: run again", file=sys.stderr, flush=True)
        for mode, sample in done.items():
            results.setdefault(mode, []).append(sample)
    return results, retaken


def _args() -> tuple[argparse.Namespace, list[str], list[str]]:
    """The command line, checked: (its options, the workloads, the tracers)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="keepalive",
                    help=f"comma-separated, of: {', '.join(WORKLOADS)} (default keepalive)")
    ap.add_argument("--tracers", default="full,fast",
                    help="comma-separated: full, fast; or a part of fast alone: strace "
                    "(its strace), tracefs (+ its tracefs syscall-set instance), kernel (fast "
                    "without strace), bpf (its BPF program alone)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-untraced", action="store_true",
                    help="the tracers alone: the learner's CPU and memory over a long run "
                         "(e.g. --seconds 600), no ratios")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--max-steal", type=float, default=10.0,
                    help="a round during which the hypervisor gave more than this %% of the "
                         "CPUs to other guests (steal) is run again (default 10)")
    ap.add_argument("--retakes", type=int, default=2,
                    help="at most this many times per round (default 2)")
    ap.add_argument("--server-cpu", type=int, default=0, help="-1: not pinned")
    ap.add_argument("--client-cpu", type=int, default=1, help="-1: not pinned")
    ap.add_argument("--side-by-side", action="store_true",
                    help="each tracer's server beside an untraced one, both on the server CPU "
                         "and driven at once (half the clients each); tracer 'none' is "
                         "untraced too: the method's own error")
    ap.add_argument("--unit", action="store_true",
                    help=f"run nginx as a systemd service ({UNIT}) and trace it with "
                    "`autosandbox learn UNIT` (needs systemd as PID 1)")
    args = ap.parse_args()
    if args.runs < 1 or args.seconds < 1 or args.retakes < 0:
        sys.exit("overhead.py: --runs and --seconds are at least 1, --retakes at least 0")
    workloads = args.workload.split(",")
    tracers = args.tracers.split(",")
    known = ("full", "fast", *PARTS, *(("none",) if args.side_by_side else ()))
    if any(w not in WORKLOADS for w in workloads) or any(t not in known for t in tracers):
        sys.exit(f"overhead.py: workloads are {', '.join(WORKLOADS)}; tracers "
                 f"{', '.join(known)}")
    sys.path.insert(0, str(ROOT))  # as the learn modes run it: this checkout's autosandbox
    from autosandbox.trace import opens
    if {"kernel", "bpf"} & set(tracers) and not opens.available():
        sys.exit("overhead.py: the parts kernel and bpf need root and bpftrace")
    if args.side_by_side and (args.unit or args.no_untraced):
        sys.exit("overhead.py --side-by-side: a plain command's servers, with untraced ones")
    if args.unit and set(tracers) & set(PARTS):
        sys.exit("overhead.py --unit: the parts (strace, tracefs) run a plain command only")
    if args.unit and "threads" in workloads:
        sys.exit("overhead.py --unit: the unit is nginx (keepalive, close)")
    if args.unit and not Path("/run/systemd/system").is_dir():
        sys.exit("overhead.py --unit: systemd is not running here (run it in the CI VM: "
                 "AUTOSANDBOX_CI_VM_COMMAND='python3 benchmarks/overhead.py --unit' "
                 "integration/run-vm)")
    for tool in ("nginx", "wrk", "strace"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"overhead.py: {tool} is not installed (apt-get install nginx-light wrk "
                     "strace)")
    return args, workloads, tracers


def main() -> None:
    args, workloads, tracers = _args()
    cpus = (None if args.server_cpu < 0 or args.unit else args.server_cpu,
            None if args.client_cpu < 0 or args.unit else args.client_cpu)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} (1/5/15 min); server CPU {cpus[0]}, wrk CPU {cpus[1]}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="asb-bench-") as tmp:
        work = Path(tmp)
        for d in (work, work / "a", work / "b"):  # a, b: side by side
            _prepare(d)
        port = _free_port()
        if args.unit:
            (work / "nginx.conf").write_text(CONF.format(dir=work, port=port))
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            UNIT_FILE.write_text(f"[Service]\nExecStart={nginx} -c {work}/nginx.conf "
                                 "-g 'daemon off;'\n")
            _systemctl("daemon-reload")
            _systemctl("start", UNIT)
        try:
            for workload in workloads:
                modes = (tracers if args.no_untraced or args.side_by_side
                         else ("untraced", *tracers))
                results, retaken = measure(workload, modes, args, work, port, cpus)
                if args.side_by_side:
                    for t in tracers:
                        report(workload, {"untraced": results[f"untraced-{t}"],
                                          t: results[t]}, args.runs, beside=t)
                else:
                    report(workload, results, args.runs)
                if retaken:
                    print(f"  ({retaken} rounds run again: steal above {args.max_steal:g}%)")
                if args.unit and "fast" in tracers:
                    profile = json.loads((work / "fast.json").read_text())
                    print(f"  fast tracer sources: {', '.join(profile['sources'])}")
        finally:
            if args.unit:
                subprocess.run(["systemctl", "stop", UNIT], check=False)
                UNIT_FILE.unlink(missing_ok=True)
                _systemctl("daemon-reload")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
