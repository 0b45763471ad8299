#!/usr/bin/python3
"""Tiny Type=notify service: sends READY=1 over $NOTIFY_SOCKET (no libsystemd needed)."""

import os
import signal
import socket
import sys
import time


def sd_notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall(msg.encode())
    return True


def main():
    signal.signal(signal.SIGTERM, lambda *_: (sd_notify("STOPPING=1"), sys.exit(0)))
    time.sleep(0.5)  # pretend to initialise
    sd_notify(f"READY=1\nSTATUS=as-notify ready, pid {os.getpid()}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
