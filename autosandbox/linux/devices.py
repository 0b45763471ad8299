"""Device nodes every program may open (PrivateDevices= keeps them); anything else under
/dev is a real device."""

from __future__ import annotations

PSEUDO_DEVICES = frozenset({
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
    "/dev/ptmx", "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/console", "/dev/log",
})
PSEUDO_DEVICE_PREFIXES = ("/dev/pts/", "/dev/shm/", "/dev/fd/", "/dev/mqueue/", "/dev/hugepages/")
