"""The watchdog of one autosandbox process (see procs.py). Run as a script, never imported:
`python3 -S watchdog.py OWNER_PID`, our pipe on stdin, one pid a line of what we start.

It notes each announced pid and, polling, each child of the owner, with its session and
start time. On end-of-file (the owner is gone, however it died) it SIGKILLs those still
alive with the same start time, and every process of the sessions they led that started
after the leader (a session id is not reused while a member lives). Never by name.

A poll can see a child between its fork and its setsid (a child waiting for a CPU on a busy
machine is there for milliseconds), still in the owner's session: what a helper announces
of itself (after its setsid) replaces that, and so does a later poll or, at the end, the
session of a child still alive. Otherwise the session it leads (strace's tracee, holding the
user's terminal) would be left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time


def stat(pid: int) -> tuple[int, int] | None:
    """(session, start time) of a live, non-zombie `pid`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return None if fields[0] == b"Z" else (int(fields[3]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def children(owner: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for t in os.listdir(f"/proc/{owner}/task"):
            with open(f"/proc/{owner}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def watch(owner: int) -> dict[int, tuple[int, int]]:
    """Until end-of-file on stdin: pid -> (session, start time) of all we were told of."""
    known: dict[int, tuple[int, int]] = {}

    def note(pid: int, st: tuple[int, int] | None) -> None:
        # the same process (its start time) noted again: its session now, maybe its own
        if st is not None and (pid not in known or known[pid][1] == st[1]):
            known[pid] = st

    os.set_blocking(0, False)
    buf = b""
    while True:
        try:
            chunk = os.read(0, 4096)
        except BlockingIOError:
            for pid in children(owner):
                note(pid, stat(pid))
            time.sleep(0.05)  # helpers announce themselves; polling is the second net
            continue
        if not chunk:
            return known
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            words = line.split()
            if len(words) == 3 and all(w.isdigit() for w in words):
                # what the helper said of itself after its setsid: right even if it is
                # already gone, and over a poll that saw it before its setsid
                note(int(words[0]), (int(words[1]), int(words[2])))
            elif len(words) == 1 and words[0].isdigit():
                note(int(words[0]), stat(int(words[0])))


def kill_all(known: dict[int, tuple[int, int]]) -> None:
    # one still alive is in the session it is in now (it may have left ours since its poll)
    for pid, (_, start) in known.items():
        st = stat(pid)
        if st is not None and st[1] == start:
            known[pid] = st
    # a session id is not reused while a member lives; a leader's pid alive with another
    # start time was reused, and that session is not ours
    sessions = {p: start for p, (sid, start) in known.items()
                if sid == p and (stat(p) or (0, start))[1] == start}
    for _ in range(50):
        victims = {p for p, (_, start) in known.items() if (stat(p) or (0, -1))[1] == start}
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in victims:
                st = stat(int(name))
                if st is not None and st[0] in sessions and st[1] >= sessions[st[0]]:
                    victims.add(int(name))
        victims.discard(os.getpid())
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def remove_instances(owner: int) -> None:
    """The owner's tracefs instances (autosandbox-[sys-]OWNER-ROOT): a set_event_pid filter
    left in place costs every task on the machine at each context switch until `reset`.
    Events off first, then the directory (as runstate.remove_tracefs_instance, which `reset`
    uses: this script imports nothing of ours)."""
    if os.path.exists(f"/proc/{owner}"):
        return  # its pid is someone's again: the names are not ours to judge
    with contextlib.suppress(OSError):
        # PROC_PID_INIT_INO: in a container, a host run's instance may carry the same number
        if os.readlink("/proc/self/ns/pid") != "pid:[4026531836]":
            return
    for root in TRACEFS:
        with contextlib.suppress(OSError):
            names = os.listdir(f"{root}/instances")
            for name in names:
                parts = name.split("-")
                if parts[0] != "autosandbox" or len(parts) < 3 or parts[-2] != str(owner):
                    continue
                inst = f"{root}/instances/{name}"
                with contextlib.suppress(OSError), open(f"{inst}/events/enable", "w") as f:
                    f.write("0\n")  # every event of the instance at once
                with contextlib.suppress(OSError):
                    os.rmdir(inst)
            return  # one tracefs mount holds them all


def main() -> None:
    # what reaches autosandbox's process group (Ctrl-C, Ctrl-\\) or its session must not end
    # the one process that cleans up after a SIGKILL (interrupts.SIGNALS, and SIGPIPE)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2, signal.SIGALRM, signal.SIGXCPU, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    owner = int(sys.argv[1])
    kill_all(watch(owner))
    remove_instances(owner)


if __name__ == "__main__":
    main()
