"""Throughput of nginx while autosandbox learns it, as a ratio of untraced throughput.

nginx (master + 2 workers) serves a 4 KiB static file on loopback; wrk -t2 -c32 drives it for
--seconds, untraced and while `autosandbox learn` traces it with each tracer ('full': strace
stops on every call; 'fast': strace --seccomp-bpf on the calls the sandbox is built from, the
syscall set from tracefs). Ratios are measured in one run: median of --runs each.

    apt-get install nginx-light wrk   # or nginx
    python3 benchmarks/overhead.py [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _wrk(port: int, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s",
                          f"http://127.0.0.1:{port}/index.html"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(m.group(1))


def run_once(mode: str, workdir: Path, seconds: int) -> float:
    port = _free_port()
    (workdir / "nginx.conf").write_text(CONF.format(dir=workdir, port=port))
    nginx = [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(workdir / "nginx.conf"),
             "-g", "daemon off;"]
    if mode == "untraced":
        argv = nginx
    else:
        argv = [sys.executable, "-m", "autosandbox", "learn", "-q", "--tracer", mode,
                "--duration", f"{seconds + 8}s", "-o", str(workdir / f"{mode}.conf"), "--",
                *nginx]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        _wait_port(port)
        time.sleep(1)
        return _wrk(port, seconds)
    finally:
        if mode == "untraced":
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)  # learn stops nginx itself at the end of --duration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "strace"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"overhead.py: {tool} is not installed (apt-get install nginx-light wrk "
                     "strace)")
    with tempfile.TemporaryDirectory(prefix="autosandbox-bench-") as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        (work / "www" / "index.html").write_bytes(b"x" * 4096)
        os.chmod(tmp, 0o755)
        results: dict[str, list[float]] = {"untraced": [], "full": [], "fast": []}
        for i in range(args.runs):  # interleaved, so drift hits every mode alike
            for mode in results:
                rate = run_once(mode, work, args.seconds)
                results[mode].append(rate)
                print(f"run {i + 1} {mode:>8}: {rate:10.0f} requests/s", file=sys.stderr)
        base = statistics.median(results["untraced"])
        print(f"untraced: {base:.0f} requests/s (median of {args.runs})")
        for mode in ("full", "fast"):
            med = statistics.median(results[mode])
            print(f"{mode:>8}: {med:.0f} requests/s, ratio {med / base:.2f}x of untraced")


if __name__ == "__main__":
    main()
