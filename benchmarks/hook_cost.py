"""What the fast tracer's BPF program costs a running server, part by part, in one run.

nginx (overhead.py's keepalive: master + 2 workers, a 4 KiB file, `wrk -t2 -c32`) is started
once, untraced; wrk's slices then alternate between nothing attached and each variant attached
to the running server (its pids are the program's from the start), a new bpftrace each slice:

  full     the fast tracer's whole program (trace/opens.py script(), with the hot calls and
           the capability checks of kernel.py and kernel_sets.py)
  trivial  one probe on sys_exit_openat that counts the server's opens and does nothing else
  nomatch  the same probe for a pid that does not exist: it runs on every open, matches none

Printed per variant: the server's CPU time per request (user + system of nginx: the hooks and
programs run in its system time) and requests/s, medians over the rounds, with ratios to the
slices with nothing attached (median, and paired: each round against its own). Rounds go
every other one backwards, so a host drifting within a round moves all alike; slices during
which the hypervisor stole more than --max-steal % of the CPUs are left out (counted), and
the paired ratio is over the rounds that have none such.
So: none -> nomatch is the hook itself (the kernel's syscall-exit tracepoint, the perf event
bpftrace attaches through, a BPF program that returns at once); nomatch -> trivial a match;
trivial -> full what our program reads and de-duplicates.

    apt-get install nginx-light wrk bpftrace
    python3 benchmarks/hook_cost.py [--rounds 8] [--seconds 2] [--variants full,trivial,nomatch]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from overhead import Sample, _free_port, _measure, _pinned, _server_argv, _wait_port

from autosandbox import procs
from autosandbox.trace import opens

VARIANTS = ("full", "trivial", "nomatch")
# One probe, no work but a count: @p holds the server's pids (or a pid that cannot exist)
_ONE_PROBE = ('BEGIN {{ {marks}printf("READY\\n"); }}\n'
              "tracepoint:syscalls:sys_exit_openat /@p[tid]/ {{ @n = count(); }}\n")
NO_PID = opens.MARK_PID  # above any pid_max: matches no task (no flush runs here)


@contextlib.contextmanager
def attached(variant: str, pids: list[int]) -> Iterator[None]:
    """The variant's BPF program attached to `pids` for the duration."""
    if variant == "none":
        yield
        return
    if variant == "full":
        with opens.OpenTracer(program_pids=pids):
            yield
        return
    marks = "".join(f"@p[{p}] = 1; " for p in (pids if variant == "trivial" else [NO_PID]))
    # as the tracer runs its bpftrace: ended with us, even by SIGKILL (a probe left attached
    # would tax every open on the machine)
    proc = procs.spawn_reader(["bpftrace", "-e", _ONE_PROBE.format(marks=marks)],
                              dict(os.environ), "latin-1")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        else:
            raise RuntimeError(f"bpftrace did not start ({variant})")
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _summary(results: dict[str, list[Sample]], max_steal: float) -> None:
    """Medians over each variant's slices with little steal; paired over the rounds whose
    slices all had little."""
    def clean(v: str) -> list[Sample]:
        return [x for x in results[v] if x.steal_pct <= max_steal]

    base = clean("none")
    rounds = [i for i in range(len(results["none"]))
              if all(results[v][i].steal_pct <= max_steal for v in results)]
    if not base:
        sys.exit(f"hook_cost.py: every untraced slice had steal above {max_steal:g}%")
    us = statistics.median(x.server_us for x in base)
    rate = statistics.median(x.rate for x in base)
    print(f"none: {us:.2f} us/request, {rate:,.0f} requests/s (median of {len(base)} slices "
          f"with steal <= {max_steal:g}%; {len(rounds)} rounds had all their slices so)")
    for v, samples in results.items():
        kept = clean(v)
        if v == "none" or not kept:
            continue
        v_us = statistics.median(x.server_us for x in kept)
        v_rate = statistics.median(x.rate for x in kept)
        ratios = [samples[i].server_us / results["none"][i].server_us for i in rounds]
        paired = f", paired {statistics.median(ratios):.2f}x" if ratios else ""
        print(f"{v}: {v_us:.2f} us/request, {v_us / us:.2f}x ({v_us - us:+.2f} us a request"
              f"{paired}; {len(kept)} slices); {v_rate:,.0f} requests/s, {v_rate / rate:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=2, help="wrk's slice (default 2)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--max-steal", type=float, default=5.0)
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        sys.exit("hook_cost.py: --rounds and --seconds are at least 1")
    variants = ["none", *args.variants.split(",")]
    if any(v not in VARIANTS for v in variants[1:]):
        sys.exit(f"hook_cost.py: variants are {', '.join(VARIANTS)}")
    if os.geteuid() != 0 or not opens.available():
        sys.exit("hook_cost.py: needs root and bpftrace (opens.available())")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"hook_cost.py: {tool} is not installed (apt-get install nginx-light wrk)")
    try:
        results = run(args, variants)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        sys.exit(f"hook_cost.py: {e}")
    _summary(results, args.max_steal)


def run(args: argparse.Namespace, variants: list[str]) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="asb-hook-") as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        (work / "www" / "index.html").write_bytes(b"x" * 4096)
        os.chmod(tmp, 0o755)
        port = _free_port()
        server = subprocess.Popen(_server_argv("keepalive", work, port),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, preexec_fn=_pinned(args.server_cpu))
        try:
            _wait_port(port)
            time.sleep(1)  # the workers forked
            root = psutil.Process(server.pid)
            pids = [server.pid, *(c.pid for c in root.children(recursive=True))]
            for r in range(args.rounds):
                for v in variants if r % 2 == 0 else reversed(variants):
                    with attached(v, pids):
                        time.sleep(1)  # bpftrace past its start
                        sample = _measure(server.pid, port, args.seconds, "keepalive",
                                          args.client_cpu)
                    results[v].append(sample)
                    print(f"round {r + 1} {v:>8}: {sample.server_us:6.2f} us/request, "
                          f"{sample.rate:8.0f} requests/s, steal {sample.steal_pct:.1f}%",
                          file=sys.stderr, flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    return results


if __name__ == "__main__":
    main()
