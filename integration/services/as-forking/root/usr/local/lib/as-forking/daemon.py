#!/usr/bin/python3
"""Tiny classic daemon: double fork, write a PID file, then idle until SIGTERM."""

import os
import signal
import sys
import time


def main():
    pidfile = sys.argv[1]
    if os.fork() > 0:
        # First parent waits for the PID file so systemd finds it on our exit.
        for _ in range(100):
            if os.path.exists(pidfile):
                os._exit(0)
            time.sleep(0.05)
        os._exit(1)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, pidfile)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
