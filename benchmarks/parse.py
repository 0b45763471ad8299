"""Parser throughput and memory: lines/s and peak RSS for 1x and 4x a real strace log.

The log is recorded here, once, from a real busy program: Python's http.server answering
HTTP requests from a client on loopback, traced with the same strace options as `learn`,
until it holds at least 1,000,000 lines (kept in benchmarks/data/, not committed).

    python3 benchmarks/parse.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autosandbox.profile import Profile
from autosandbox.trace.command import STRACE_OPTIONS
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.strace_parser import StraceParser

DATA = Path(__file__).resolve().parent / "data"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(path: Path, min_lines: int) -> None:
    site = DATA / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text("<h1>autosandbox</h1>\n" * 50)
    port = _free_port()
    server = subprocess.Popen(
        ["strace", *STRACE_OPTIONS, "-o", str(path), PYTHON, "-m", "http.server",
         "--bind", "127.0.0.1", "--directory", str(site), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        url = f"http://127.0.0.1:{port}/index.html"
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        lines = 0
        while lines < min_lines and time.monotonic() < deadline:
            for _ in range(200):
                urllib.request.urlopen(url, timeout=5).read()
            with path.open("rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # strace and the server it runs
        server.wait(10)


def parse_child(path: str, repeat: int) -> None:
    """Runs in a fresh process so that its peak RSS is its own."""
    profile = Profile()
    rec = Recorder(profile, "/")
    parser = StraceParser(READ_CALLS)
    start = time.process_time()
    for _ in range(repeat):
        with open(path, encoding="latin-1", buffering=1 << 20) as f:
            for line in f:
                ev = parser.feed(line[:-1])
                if ev is not None:
                    rec.handle(ev)
    rec.finish(parser)
    cpu = time.process_time() - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"lines": parser.lines, "cpu_s": cpu, "peak_rss_kib": rss_kib,
                      "unparsed": parser.unparsed}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--child", nargs=2, metavar=("PATH", "REPEAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        parse_child(args.child[0], int(args.child[1]))
        return
    DATA.mkdir(exist_ok=True)
    log = DATA / "http-server.strace"
    if not log.exists() or log.stat().st_size < 50 * args.lines:
        print(f"recording a strace log of python http.server under load into {log} ...",
              file=sys.stderr)
        record(log, args.lines)
    results = []
    for repeat in (1, 4):
        out = subprocess.run([sys.executable, __file__, "--child", str(log), str(repeat)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        results.append(r)
        print(f"{repeat}x: {r['lines']:>9} lines  {r['lines'] / r['cpu_s']:>9.0f} lines/s "
              f"(one core, CPU time)  peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB  "
              f"unparsed {r['unparsed']}")
    growth = results[1]["peak_rss_kib"] / results[0]["peak_rss_kib"]
    print(f"peak RSS 4x/1x: {growth:.2f} (1.00 = memory does not grow with the log)")


if __name__ == "__main__":
    main()
