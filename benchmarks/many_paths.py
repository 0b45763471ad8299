"""Memory of the learner under a program that touches many distinct paths.

A Python program creates (and removes again) `--paths` distinct files spread over
`--dirs` directories at an even rate for `--seconds`; `autosandbox learn` traces it with each
tracer. Printed per tracer: peak RSS (VmHWM) of autosandbox itself and of its helpers
(strace, bpftrace), the profile's size, paths and groups kept, and lost kernel events.

    sudo .venv/bin/python benchmarks/many_paths.py --paths 400000 --seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOAD = """
import os, sys, time
base, n, dirs, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for d in range(dirs):
    os.mkdir(f"{base}/d{d}")
start = time.monotonic()
for i in range(n):
    path = f"{base}/d{i % dirs}/file-{i}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.unlink(path)
    if i % 1000 == 999:  # an even rate over the whole run
        ahead = start + seconds * (i + 1) / n - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
"""


def _tree(root: int) -> list[int]:
    """`root` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _hwm(pid: int) -> tuple[str, int] | None:
    """(command name, peak RSS in KiB) of a live pid."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "VmHWM" not in fields:
        return None
    return fields["Name"].strip(), int(fields["VmHWM"].split()[0])


def run(tracer: str, paths: int, dirs: int, seconds: float, scratch: Path) -> dict[str, object]:
    work = scratch / tracer
    work.mkdir()
    out = scratch / f"{tracer}.conf"
    cmd = [sys.executable, "-m", "autosandbox", "learn", "-q", "--tracer", tracer, "-o",
           str(out), "--", sys.executable, "-c", WORKLOAD, str(work), str(paths), str(dirs),
           str(seconds)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[str, int] = {}
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            got = _hwm(pid)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # the traced program itself (strace's argv holds the same words further on)
            traced = argv[1:3] == [b"-c", WORKLOAD.encode()]
            if got is None or traced:  # the traced program is not the learner's memory
                continue
            name, kib = got
            key = "autosandbox" if pid == proc.pid else name
            peaks[key] = max(peaks.get(key, 0), kib)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"learn --tracer {tracer} failed ({proc.returncode}): {err[-500:]}")
    profile_path = out.with_suffix(".json")
    profile = json.loads(profile_path.read_text())
    lost = [w for w in profile["warnings"] if "lost" in w or "counted only" in w
            or "not followed" in w]
    groups = profile["path_groups"]
    return {
        "tracer": tracer,
        "seconds": round(elapsed, 1),
        "peak_rss_mib": {k: round(v / 1024, 1) for k, v in sorted(peaks.items())},
        "profile_bytes": profile_path.stat().st_size,
        "paths_kept": len(profile["paths"]),
        "groups": len(groups),
        "files_in_groups": sum(g["files"] for g in groups.values()),
        "lost_or_counted": lost,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=400_000)
    ap.add_argument("--dirs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--tracer", action="append", choices=("fast", "full"),
                    help="default: both (fast only where tracefs is usable)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the fast tracer needs tracefs and bpftrace)")
    tracers = args.tracer or ["full", "fast"]
    base = Path("/srv") if Path("/srv").is_dir() else Path("/var/tmp")
    scratch = Path(tempfile.mkdtemp(prefix="autosandbox-many-paths-", dir=base))
    try:
        for tracer in tracers:
            r = run(tracer, args.paths, args.dirs, args.seconds, scratch)
            print(json.dumps(r), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
