"""Throughput of nginx while autosandbox learns it, as a ratio of untraced throughput.

nginx (master + 2 workers) serves a 4 KiB static file on loopback; wrk -t2 -c32 drives it for
--seconds, untraced and while `autosandbox learn` traces it with each tracer ('full': strace
stops on every call; 'fast': strace --seccomp-bpf on the calls the sandbox is built from, the
syscall set from tracefs, opens from bpftrace when installed). Ratios are measured in one run:
median of --runs each. With --unit, nginx runs as a systemd service and `autosandbox learn
UNIT` traces it (in the CI VM: AUTOSANDBOX_CI_VM_COMMAND='python3 benchmarks/overhead.py
--unit' integration/run-vm).

    apt-get install nginx-light wrk   # or nginx
    python3 benchmarks/overhead.py [--runs 3] [--seconds 10] [--unit]
"""

from __future__ import annotations

import argparse
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


UNIT = "autosandbox-bench-nginx.service"
UNIT_FILE = Path("/run/systemd/system") / UNIT


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=True, capture_output=True)


def run_unit_once(mode: str, workdir: Path, seconds: int, port: int) -> float:
    """The same nginx as a systemd service; traced by `autosandbox learn UNIT`."""
    if mode == "untraced":
        _wait_port(port)
        return _wrk(port, seconds)
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
        return _wrk(port, seconds)
    finally:
        _, err = learn.communicate(timeout=300)
        if learn.returncode != 0:
            raise RuntimeError(f"learn failed ({learn.returncode}): {err}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--unit", action="store_true",
                    help=f"run nginx as a systemd service ({UNIT}) and trace it with "
                    "`autosandbox learn UNIT` (needs systemd as PID 1)")
    args = ap.parse_args()
    if args.unit and not Path("/run/systemd/system").is_dir():
        sys.exit("overhead.py --unit: systemd is not running here (run it in the CI VM: "
                 "AUTOSANDBOX_CI_VM_COMMAND='python3 benchmarks/overhead.py --unit' "
                 "integration/run-vm)")
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
        port = _free_port()
        if args.unit:
            (work / "nginx.conf").write_text(CONF.format(dir=work, port=port))
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            UNIT_FILE.write_text(f"[Service]\nExecStart={nginx} -c {work}/nginx.conf "
                                 "-g 'daemon off;'\n")
            _systemctl("daemon-reload")
            _systemctl("start", UNIT)
        try:
            for i in range(args.runs):  # interleaved, so drift hits every mode alike
                for mode in results:
                    rate = (run_unit_once(mode, work, args.seconds, port) if args.unit
                            else run_once(mode, work, args.seconds))
                    results[mode].append(rate)
                    print(f"run {i + 1} {mode:>8}: {rate:10.0f} requests/s", file=sys.stderr)
        finally:
            if args.unit:
                subprocess.run(["systemctl", "stop", UNIT], check=False)
                UNIT_FILE.unlink(missing_ok=True)
                _systemctl("daemon-reload")
        if args.unit:
            profile = json.loads((work / "fast.json").read_text())
            print(f"fast tracer sources: {', '.join(profile['sources'])}")
        base = statistics.median(results["untraced"])
        print(f"untraced: {base:.0f} requests/s (median of {args.runs})")
        for mode in ("full", "fast"):
            med = statistics.median(results[mode])
            print(f"{mode:>8}: {med:.0f} requests/s, ratio {med / base:.2f}x of untraced")


if __name__ == "__main__":
    main()
