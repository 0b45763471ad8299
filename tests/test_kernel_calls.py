"""The hot calls recorded in the kernel (trace/kernel.py) instead of strace stops: a program
making them gives the same profile under the fast tracer as under the full one, apart from the
differences listed in the test (each with its reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autosandbox.trace import kernel, opens
from autosandbox.trace.command import strace_options, trace_command
from autosandbox.trace.kernel import CallRecord

from .conftest import PYTHON


def test_strace_leaves_the_hot_calls_to_the_kernel_only_when_it_runs() -> None:
    def traced(options: tuple[str, ...]) -> set[str]:
        spec = options[options.index("-e") + 1].removeprefix("trace=")
        return {n.lstrip("?") for n in spec.split(",")}

    hot = {"accept", "accept4", "setsockopt", "fcntl", "mmap", "mprotect"}
    assert hot <= traced(strace_options(True))
    if kernel.covered() >= hot:
        assert not hot & traced(strace_options(True, kernel_opens=True))
    # bind, connect and socket stay strace's: they read the socket's type from socket()
    assert {"bind", "connect", "socket", "clone"} <= traced(strace_options(True, True))


def test_records_read_as_strace_would_print_them() -> None:
    acc = kernel.to_syscall(CallRecord(7, "accept4", 0, (3, 2, 0xFAB8, 0x0100007F, 0),
                                       "socket:[42]"))
    assert acc.args[:2] == ["3<socket:[42]>", '{sa_family=AF_INET, sin_port=htons(47354), '
                            'sin_addr=inet_addr("127.0.0.1")}'] and acc.ok
    six = kernel.to_syscall(CallRecord(7, "accept", 0, (3, 10, 0x5, 0, 1 << 56)))
    assert 'inet_pton(AF_INET6, "::1", &sin6_addr)' in six.args[1]
    again = kernel.to_syscall(CallRecord(7, "accept4", -11, (3, 0, 0, 0, 0)))
    assert again.errno == "EAGAIN" and not again.ok
    opt = kernel.to_syscall(CallRecord(7, "setsockopt", 0, (4, 1, 36, 5), "socket:[9]"))
    assert opt.args[:4] == ["4<socket:[9]>", "SOL_SOCKET", "SO_MARK", "[5]"]
    wx = kernel.to_syscall(CallRecord(7, "mprotect", 0, (7,)))
    assert wx.args[2] == "PROT_READ|PROT_WRITE|PROT_EXEC"
    lease = kernel.to_syscall(CallRecord(7, "fcntl", 0, (5, 1024, 1)))
    assert lease.args[1:] == ["F_SETLEASE", "F_WRLCK"]


PROGRAM = r"""
import ctypes, fcntl, mmap, os, socket, sys, threading
base = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(64)
port = srv.getsockname()[1]
for _ in range(200):  # a connection per request: one record in the kernel, not 200
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a.close(); c.close()
t = threading.Thread(target=lambda: srv.accept()[0].close())  # accepted by a thread
t.start(); socket.create_connection(("127.0.0.1", port)).close(); t.join()
srv6 = socket.socket(socket.AF_INET6)
srv6.bind(("::1", 0)); srv6.listen()
c6 = socket.create_connection(("::1", srv6.getsockname()[1])); srv6.accept()[0].close()
srv.setblocking(False)
try:
    srv.accept()
except BlockingIOError:  # EAGAIN, as a nonblocking server sees it between clients
    pass
probe = socket.socket()  # a privileged option on a socket closed unused: a probe, no need
probe.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 7); probe.close()
dev = socket.socket()  # bound to a device, then connected: CAP_NET_RAW
dev.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
dev.connect(("127.0.0.1", port)); dev.close()
buf = socket.socket()  # SO_SNDBUFFORCE after SO_SNDBUF: sd_notify's wish, no need
buf.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
buf.setsockopt(socket.SOL_SOCKET, 32, 1 << 20)  # SO_SNDBUFFORCE
buf.connect(("127.0.0.1", port)); buf.close()
with open(base + "/leased", "w"):
    pass
fd = os.open(base + "/leased", os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
os.close(fd)
try:
    fcntl.fcntl(999, fcntl.F_GETFL)
except OSError:  # EBADF
    pass
rwx = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
libc = ctypes.CDLL(None, use_errno=True)
page = mmap.mmap(-1, 8192)
addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
assert libc.mprotect(ctypes.c_void_p(addr), 4096, 7) == 0
"""


def _relevant(profile: Any, base: Path) -> dict[str, Any]:
    inferred = {cap: sorted(ex for ex in ev.examples if not ex.startswith("kernel granted"))
                for cap, ev in profile.capabilities.items()}
    return {
        # Accepted peers: one per client address and listener in the kernel (a client's
        # ephemeral port decides nothing; strace records each port up to ENDPOINTS_MAX).
        "inbound": {(e.family, e.proto, e.addr) for e in profile.inbound},
        "caps": {c: ex for c, ex in inferred.items() if ex},
        "wx": sorted(ex.split("(")[0] for ex in profile.flags.get("wx_memory").examples)
        if "wx_memory" in profile.flags else [],
        # Which calls failed and how (counts: the kernel reports a distinct failure once).
        "failed": {n: set(e) for n, e in profile.failed_syscalls.items()
                   if n in ("accept", "accept4", "setsockopt", "fcntl", "mmap", "mprotect")},
        "syscalls": {n for n in ("accept4", "setsockopt", "fcntl", "mmap", "mprotect")
                     if n in profile.syscalls},
    }


@pytest.mark.skipif(not opens.available(),
                    reason="needs root, bpftrace and the syscall tracepoints of the host")
def test_kernel_calls_match_strace(tmp_path: Path) -> None:
    def run(fast: bool) -> tuple[dict[str, Any], list[str]]:
        base = tmp_path / ("fast" if fast else "full")
        base.mkdir()
        result = trace_command([PYTHON, "-c", PROGRAM, str(base)], cwd="/", fast=fast)
        assert result.exit_code == 0
        profile = result.profile
        if fast:
            assert "bpftrace:open" in profile.sources
        return _relevant(profile, base), profile.warnings

    (full, _), (fast, warnings) = run(False), run(True)
    assert fast == full, warnings
    assert fast["inbound"] == {("AF_INET", "tcp", "127.0.0.1"), ("AF_INET6", "tcp", "::1")}
    assert set(fast["caps"]) == {"CAP_NET_RAW", "CAP_LEASE"}, fast["caps"]
    assert any("SO_BINDTODEVICE" in ex and "connect()" in ex for ex in fast["caps"]["CAP_NET_RAW"])
    assert fast["wx"] == ["mmap", "mprotect"]
    assert fast["failed"]["accept4"] == {"EAGAIN"} and fast["failed"]["fcntl"] == {"EBADF"}
