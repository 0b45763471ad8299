"""What the fast tracer costs per system call: to the program it traces, and to every other
process on the machine while it runs (a bystander).

`dd bs=1` makes two calls per byte (read, write), so its time is almost all syscall entry and
exit. It runs untraced, traced (`autosandbox learn --tracer fast -- dd ...`) and untraced
beside a learn of another program (`sleep`), interleaved; printed: medians of --runs, ratios
to untraced and the extra nanoseconds per call, measured in one run.

    python3 benchmarks/syscall_cost.py [--runs 5] [--bytes 2000000]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_COPIED = re.compile(rb"copied, ([0-9.]+) s")


def _dd_seconds(stderr: bytes) -> float:
    m = _COPIED.search(stderr)
    if m is None:
        raise RuntimeError(f"no dd timing in: {stderr[-300:]!r}")
    return float(m.group(1))


def _learn(*argv: str) -> list[str]:
    return [sys.executable, "-m", "autosandbox", "learn", "--tracer", "fast", *argv]


def untraced(dd: list[str]) -> float:
    return _dd_seconds(subprocess.run(dd, capture_output=True, check=True).stderr)


def traced(dd: list[str], env: dict[str, str]) -> float:
    proc = subprocess.run(_learn("--", *dd), capture_output=True, env=env, check=True)
    return _dd_seconds(proc.stderr)


def bystander(dd: list[str], env: dict[str, str]) -> float:
    """dd untraced while a learn of `sleep` runs: what the learn costs everyone else."""
    learn = subprocess.Popen(_learn("--duration", "120s", "--", "sleep", "200"), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        time.sleep(10)  # bpftrace and tracefs set up (~4 s here)
        if learn.poll() is not None:
            err = learn.stderr.read() if learn.stderr else b""
            raise RuntimeError(f"learn ended early: {err[-300:]!r}")
        return untraced(dd)
    finally:
        os.killpg(learn.pid, signal.SIGINT)
        learn.communicate(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bytes", type=int, default=2_000_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("syscall_cost.py: run as root (the fast tracer needs it)")
    dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={args.bytes}"]
    calls = 2 * args.bytes
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"load before: {os.getloadavg()[0]:.2f}; {calls:,} calls per run", flush=True)
    times: dict[str, list[float]] = {"untraced": [], "traced": [], "bystander": []}
    for i in range(args.runs):  # interleaved, so drift hits every mode alike
        times["untraced"].append(untraced(dd))
        times["traced"].append(traced(dd, env))
        times["bystander"].append(bystander(dd, env))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
              file=sys.stderr, flush=True)
    base = statistics.median(times["untraced"])
    print(f"untraced: {base:.3f} s ({base / calls * 1e9:.0f} ns per call), median of {args.runs}")
    for mode in ("traced", "bystander"):
        t = statistics.median(times[mode])
        print(f"{mode:>9}: {t:.3f} s, {base / t:.2f}x the untraced rate, "
              f"{(t - base) / calls * 1e9:+.0f} ns per call")


if __name__ == "__main__":
    main()
