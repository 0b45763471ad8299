"""The fast tracer (strace --seccomp-bpf on the calls the recorder reads, syscall set from
tracefs) must see what the full tracer sees: nothing the sandbox is built from may be lost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autosandbox.profile import Profile
from autosandbox.trace import opens
from autosandbox.trace.command import strace_argv, trace_command
from autosandbox.trace.tracefs import syscall_tracer_available

from .conftest import PYTHON

CODE = ("import socket, threading, os, subprocess, mmap\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "t = threading.Thread(target=print, args=('x',)); t.start(); t.join()\n"
        "subprocess.run(['/bin/true']); os.listdir('/etc')\n"
        "open('/proc/self/status').read(); os.getcwd(); os.umask(0o22)\n"
        "os.setgroups(os.getgroups())\n")  # as root: a capability check the kernel grants


@pytest.mark.skipif(not syscall_tracer_available(),
                    reason="tracefs raw_syscalls not usable here (container or no tracefs)")
@pytest.mark.parametrize("kernel", ["bpftrace", "tracefs"])
def test_fast_mode_loses_nothing(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With bpftrace the BPF program records opens, hot calls and capability checks
    (kernel_sets.py); without it strace stops on them and a tracefs instance counts the checks.
    The syscall set comes from tracefs either way."""
    if kernel == "bpftrace" and not opens.available():
        pytest.skip("bpftrace is not usable here")
    full = trace_command([PYTHON, "-c", CODE], cwd="/", fast=False).profile
    if kernel == "tracefs":
        monkeypatch.setattr(opens, "available", lambda: False)
    fast = trace_command([PYTHON, "-c", CODE], cwd="/", fast=True).profile
    assert "tracefs:syscalls" in fast.sources and fast.fast_traced
    assert f"{kernel}:cap_capable" in fast.sources
    assert not full.fast_traced
    assert set(full.capabilities) == set(fast.capabilities)
    assert "CAP_SETGID" in fast.capabilities
    assert set(full.syscalls) <= set(fast.syscalls)
    # strace's set-up in the child before exec shows up, nothing else
    assert set(fast.syscalls) - set(full.syscalls) <= {"kill", "prctl", "getpid", "getppid"}
    def paths(profile: Profile) -> set[str]:
        return {re.sub(r"^/proc/\d+", "/proc/PID", p) for p in profile.paths}

    assert paths(fast) <= paths(full)
    only_looked_up = {p for p in paths(full) - paths(fast)
                      if set(full.paths.get(p, {"stat": 1})) <= {"stat"}}
    assert paths(full) - paths(fast) == only_looked_up  # what fast mode skips by design
    assert full.written_paths() == fast.written_paths()
    assert full.binds == fast.binds and full.families == fast.families
    assert full.execs.keys() == fast.execs.keys()


# Two threads and a forked child each make 20,000 calls strace does not trace.
BUSY = ("import os, threading\n"
        "def busy():\n"
        "    for _ in range(20000): os.getppid()\n"
        "ts = [threading.Thread(target=busy) for _ in range(2)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "pid = os.fork()\n"
        "if pid == 0: busy(); os._exit(0)\n"
        "os.waitpid(pid, 0)\n")


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
@pytest.mark.parametrize("kernel_opens", [False, True])
def test_new_threads_and_children_do_not_stop_on_untraced_calls(kernel_opens: bool) -> None:
    """strace puts a new task on the seccomp filter only at its first traced call; until then
    every call of it is a ptrace stop, and each stop is a voluntary context switch of the
    tracee and of strace. 60,000 untraced calls: a few hundred switches, not 120,000."""
    argv = strace_argv(shutil.which("strace") or "strace", Path(os.devnull), [PYTHON, "-c", BUSY],
                       fast=True, kernel_opens=kernel_opens)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    assert usage.ru_nvcsw < 5000, f"{usage.ru_nvcsw} voluntary switches of strace and the program"


AFTER = ("import os, socket, subprocess, sys, tempfile\n"
         "print('ready', flush=True); sys.stdin.readline()\n"
         "out = []\n"
         "for name, call in (('exec', lambda: subprocess.run(['/bin/true'], check=True)),\n"
         "                   ('socket', lambda: socket.socket().close()),\n"
         "                   ('open', lambda: open('/etc/hostname').close()),\n"
         "                   ('mkdir', lambda: os.rmdir(tempfile.mkdtemp())),\n"
         "                   ('chdir', lambda: os.chdir('/'))):\n"
         "    try:\n"
         "        call(); out.append(name + ' ok')\n"
         "    except OSError as e:\n"
         "        out.append(f'{name} {e.strerror}')\n"
         "print(', '.join(out), flush=True)\n")


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
@pytest.mark.parametrize("detachable", [True, False])
def test_what_strace_lets_go_of_keeps_every_call(detachable: bool, tmp_path: Path) -> None:
    """A per-connection instance still serving when learning ends runs on after its strace is
    killed (unit.detach_strace). A seccomp filter outlives its tracer and every call it hands to
    one then fails with ENOSYS: a detachable trace installs none. The seccomp variant is run too,
    as the proof that this test sees the failure."""
    argv = strace_argv(shutil.which("strace") or "strace", Path(os.devnull), [PYTHON, "-c", AFTER],
                       fast=True, kernel_opens=opens.available(), detachable=detachable)
    assert ("--seccomp-bpf" in argv) is not detachable
    # in a directory of its own: tempfile falls back to the cwd when /tmp fails
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.kill()  # strace itself: the program runs on, no longer traced
        proc.wait(timeout=30)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
    finally:
        proc.stdin.close()
        proc.stdout.close()
    if detachable:
        assert line == "exec ok, socket ok, open ok, mkdir ok, chdir ok\n"
    else:
        assert "Function not implemented" in line, line
