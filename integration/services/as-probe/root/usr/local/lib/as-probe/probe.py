#!/usr/bin/python3
"""Probe run as a systemd service: attempts writes/connects and records what happened.

PROBE_WRITE="path1 path2"       create/write each file
PROBE_CONNECT="127.0.0.1:8082"  TCP connect to each address (2 s timeout)
Results: JSON list in $STATE_DIRECTORY/$PROBE_NAME.json (StateDirectory is writable even
under ProtectSystem=strict) and one line per attempt on stdout (journal).
"""

import errno
import json
import os
import socket


def attempt(kind, target, fn):
    res = {"kind": kind, "target": target, "pid": os.getpid()}
    try:
        fn()
        res.update(ok=True, errno=0, error="")
    except OSError as e:
        res.update(
            ok=False,
            errno=e.errno or 0,
            error=errno.errorcode.get(e.errno or 0, str(e)),
            message=str(e),
        )
    print(json.dumps(res), flush=True)
    return res


def write(path):
    with open(path, "w") as f:
        f.write(f"written by pid {os.getpid()}\n")


def connect(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"HEAD / HTTP/1.0\r\n\r\n")


def main():
    results = []
    for p in os.environ.get("PROBE_WRITE", "").split():
        results.append(attempt("write", p, lambda p=p: write(p)))
    for a in os.environ.get("PROBE_CONNECT", "").split():
        results.append(attempt("connect", a, lambda a=a: connect(a)))
    state = os.environ.get("STATE_DIRECTORY", "/var/lib/as-probe").split(":")[0]
    name = os.environ.get("PROBE_NAME", "probe")
    out = os.path.join(state, name + ".json")
    with open(out + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
