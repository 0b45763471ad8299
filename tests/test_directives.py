"""Real programs under real strace: a harmless program gets the tight setting, a program that
needs a permission keeps it. Every drop-in must pass systemd-analyze verify silently."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from autosandbox.profile import Fact
from autosandbox.synth.target import host_target

from .conftest import checked_dropin, omitted, trace_python, values

HARMLESS = "import sys; sys.stdout.write('hello\\n')"


@pytest.fixture(scope="module")
def harmless():  # type: ignore[no-untyped-def]
    return checked_dropin(trace_python(HARMLESS))


def test_harmless_gets_everything_tight(harmless) -> None:  # type: ignore[no-untyped-def]
    sb, text = harmless
    expect = {
        "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"],
        "PrivateDevices": ["yes"], "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"], "ProtectKernelLogs": ["yes"],
        "ProtectControlGroups": ["yes"], "ProtectClock": ["yes"], "ProtectHostname": ["yes"],
        "ProtectProc": ["invisible"], "PrivateNetwork": ["yes"],
        "IPAddressDeny": ["any"], "NoNewPrivileges": ["yes"], "RestrictSUIDSGID": ["yes"],
        "RestrictNamespaces": ["yes"], "RestrictRealtime": ["yes"], "LockPersonality": ["yes"],
        "MemoryDenyWriteExecute": ["yes"], "PrivateIPC": ["yes"], "RemoveIPC": ["yes"],
        "UMask": ["0077"], "SystemCallArchitectures": ["native"],
        "SystemCallErrorNumber": ["EPERM"], "CapabilityBoundingSet": [],
        "RestrictAddressFamilies": ["none"],
    }
    for directive, want in expect.items():
        assert values(sb, directive) == want, directive
    assert values(sb, "ReadWritePaths") is None
    assert "CapabilityBoundingSet=\n" in text  # an empty set is written, not left out


def test_syscall_allow_list_covers_every_syscall_seen(harmless) -> None:  # type: ignore[no-untyped-def]
    sb, _ = harmless
    groups = host_target().groups
    allowed: set[str] = set()
    for item in values(sb, "SystemCallFilter") or []:
        allowed |= groups[item] if item.startswith("@") else {item}
    seen = {s for s in trace_python(HARMLESS).syscalls if s in groups["@known"]}
    assert seen and seen <= allowed
    assert "mount" not in allowed and "reboot" not in allowed  # not @system-service, not seen


def test_written_file_and_created_files(scratch: Path) -> None:
    existing = scratch / "config.db"
    existing.write_text("old")
    made = scratch / "spool"
    made.mkdir()
    code = (f"open({str(existing)!r}, 'r+').write('new');"
            f"import os; p={str(made)!r}+'/job'; open(p+'.tmp','w').write('x');"
            "os.rename(p+'.tmp', p)")
    sb, _ = checked_dropin(trace_python(code))
    rw = values(sb, "ReadWritePaths")
    # Written in place: the file alone. Created and renamed: the directory.
    assert sorted(rw or []) == sorted([str(existing), str(made)])
    assert values(sb, "ProtectSystem") == ["strict"]


def test_directory_made_by_the_service_is_the_writable_unit(scratch: Path) -> None:
    code = (f"import os; os.makedirs({str(scratch)!r}+'/cache/a/b');"
            f"open({str(scratch)!r}+'/cache/a/b/f','w')")
    sb, _ = checked_dropin(trace_python(code))
    assert values(sb, "ReadWritePaths") == [str(scratch / "cache")]


def test_own_state_directory_becomes_state_directory_only_where_nothing_changes() -> None:
    profile = trace_python("import sys; open(sys.argv[1], 'w').write('1')", "/dev/null")
    # The same writes seen for a unit named after its directory under /var/lib; the facts say
    # /var/lib/myapp is already root:root 0755 (what systemd would make it), /var/log/myapp is
    # root:adm 0750 (systemd would change it).
    profile.paths["/var/lib/myapp/state.json"] = {"write": 1, "create": 1}
    profile.paths["/var/log/myapp/app.log"] = {"write": 3, "create": 1}
    profile.paths["/var/lib/other/x"] = {"write": 1, "create": 1}
    profile.subject = replace(profile.subject, unit="myapp.service", uid=0, gid=0)
    profile.facts.update({
        "/var/lib/myapp": Fact("dir", 0, 0, 0o755), "/var/log/myapp": Fact("dir", 0, 4, 0o750),
        "/var/lib/other": Fact("dir", 0, 0, 0o755), "/var/lib": Fact("dir", 0, 0, 0o755),
        "/var/log": Fact("dir", 0, 0, 0o755), "/var": Fact("dir", 0, 0, 0o755),
        "/var/lib/myapp/state.json": Fact("file", 0, 0, 0o600),
        "/var/log/myapp/app.log": Fact("file", 0, 4, 0o640),
        "/var/lib/other/x": Fact("file", 0, 0, 0o600)})
    from autosandbox.synth.synthesize import synthesize
    sb = synthesize(profile, host_target())
    assert values(sb, "StateDirectory") == ["myapp"]
    assert values(sb, "LogsDirectory") is None  # systemd would chown and chmod it
    # not its own: listed, not managed; its own log directory: listed, as found
    assert values(sb, "ReadWritePaths") == ["/var/lib/other", "/var/log/myapp"]


def test_tmp_private_unless_shared() -> None:
    sb, _ = checked_dropin(trace_python(
        "import tempfile; f=tempfile.NamedTemporaryFile(dir='/tmp'); f.write(b'x'); f.flush()"))
    assert values(sb, "PrivateTmp") == ["yes"]
    assert values(sb, "ReadWritePaths") is None
    shared = Path("/tmp") / f"autosandbox-shared-{os.getpid()}"
    shared.write_text("made by someone else")
    try:
        sb, _ = checked_dropin(trace_python(f"open({str(shared)!r}).read()"))
    finally:
        shared.unlink()
    assert values(sb, "PrivateTmp") is None
    assert "shared" in omitted(sb)["PrivateTmp"]


def test_home_read_keeps_read_only() -> None:
    secret = Path("/root") / f".autosandbox-test-{os.getpid()}"
    secret.write_text("x")
    try:
        sb, _ = checked_dropin(trace_python(f"open({str(secret)!r}).read()"))
    finally:
        secret.unlink()
    assert values(sb, "ProtectHome") == ["read-only"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loopback_server_is_pinned_to_localhost() -> None:
    port = _free_port()
    code = (f"import socket; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen();"
            f"c=socket.create_connection(('127.0.0.1', {port})); a,_=s.accept(); c.send(b'x');"
            "a.recv(1)")
    sb, _ = checked_dropin(trace_python(code))
    assert values(sb, "RestrictAddressFamilies") == ["AF_INET"]
    assert values(sb, "IPAddressDeny") == ["any"]
    assert values(sb, "IPAddressAllow") == ["localhost"]
    assert values(sb, "PrivateNetwork") is None
    assert values(sb, "CapabilityBoundingSet") == []  # port above 1024: no capability


def test_public_server_keeps_ip_open_and_privileged_port_keeps_capability() -> None:
    code = "import socket; s=socket.socket(); s.bind(('0.0.0.0', 81)); s.listen()"
    sb, _ = checked_dropin(trace_python(code))
    assert values(sb, "IPAddressDeny") is None
    assert "0.0.0.0:81" in omitted(sb)["IPAddressDeny"]
    assert values(sb, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]


def test_unix_and_netlink_families() -> None:
    sb, _ = checked_dropin(trace_python(
        "import socket; socket.socketpair(); socket.socket(socket.AF_NETLINK, "
        "socket.SOCK_RAW, socket.NETLINK_ROUTE).bind((0, 0))"))
    assert values(sb, "RestrictAddressFamilies") == ["AF_NETLINK", "AF_UNIX"]
    assert values(sb, "PrivateNetwork") is None
    only_unix, _ = checked_dropin(trace_python("import socket; socket.socketpair()"))
    assert values(only_unix, "RestrictAddressFamilies") == ["AF_UNIX"]
    assert values(only_unix, "PrivateNetwork") == ["yes"]


def test_unix_socket_file_for_others_keeps_umask(scratch: Path) -> None:
    code = f"import socket; socket.socket(socket.AF_UNIX).bind({str(scratch / 'app.sock')!r})"
    sb, _ = checked_dropin(trace_python(code))
    assert values(sb, "UMask") is None
    assert values(sb, "ReadWritePaths") == [str(scratch)]


def test_identity_change_keeps_setuid_capabilities() -> None:
    sb, _ = checked_dropin(trace_python("import os; os.setgroups([]); os.setgid(65534); "
                                        "os.setuid(65534)"))
    assert values(sb, "CapabilityBoundingSet") == ["CAP_SETGID", "CAP_SETUID"]
    assert sb.hints == []  # it does change identity: no User= hint


def test_chown_keeps_cap_chown(scratch: Path) -> None:
    f = scratch / "owned"
    f.write_text("")
    sb, _ = checked_dropin(trace_python(f"import os; os.chown({str(f)!r}, 65534, 65534)"))
    assert "CAP_CHOWN" in (values(sb, "CapabilityBoundingSet") or [])


def test_wx_memory_keeps_mdwe_off() -> None:
    sb, _ = checked_dropin(trace_python(
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE|mmap.PROT_EXEC)"))
    assert values(sb, "MemoryDenyWriteExecute") is None
    assert "writable+executable" in omitted(sb)["MemoryDenyWriteExecute"]


def test_realtime_scheduling_keeps_realtime() -> None:
    sb, _ = checked_dropin(trace_python(
        "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"))
    assert values(sb, "RestrictRealtime") is None
    assert "CAP_SYS_NICE" in (values(sb, "CapabilityBoundingSet") or [])


LIBC = "import ctypes; libc = ctypes.CDLL(None, use_errno=True);"


def test_personality_change_keeps_personality_unlocked() -> None:
    sb, _ = checked_dropin(trace_python(LIBC + "libc.personality(0x0040000)"))
    assert values(sb, "LockPersonality") is None


def test_namespaces_and_hostname() -> None:
    sb, _ = checked_dropin(trace_python(
        LIBC + "assert libc.unshare(0x04000000) == 0; assert libc.sethostname(b'sbx', 3) == 0"))
    assert values(sb, "RestrictNamespaces") == ["uts"]
    assert values(sb, "ProtectHostname") is None
    assert "CAP_SYS_ADMIN" in (values(sb, "CapabilityBoundingSet") or [])


def test_sysv_ipc_keeps_host_ipc() -> None:
    sb, _ = checked_dropin(trace_python(
        LIBC + "i = libc.shmget(0, 4096, 0o1600); assert i >= 0; libc.shmctl(i, 0, None)"))
    assert values(sb, "PrivateIPC") is None and values(sb, "RemoveIPC") is None


def test_proc_sys_write_keeps_tunables_writable() -> None:
    sb, _ = checked_dropin(trace_python(
        "p='/proc/sys/vm/swappiness'; v=open(p).read(); open(p,'w').write(v)"))
    assert values(sb, "ProtectKernelTunables") is None
    assert values(sb, "ProcSubset") is None  # /proc/sys is not a process directory


def test_other_processes_in_proc_keep_proc_visible() -> None:
    sb, _ = checked_dropin(trace_python("open('/proc/1/stat').read()"))
    assert values(sb, "ProtectProc") is None


def test_kernel_log_and_clock_and_modules() -> None:
    sb, _ = checked_dropin(trace_python(
        "import os; fd=os.open('/dev/kmsg', os.O_RDONLY|os.O_NONBLOCK); os.read(fd, 8192);" +
        LIBC + "buf = ctypes.create_string_buffer(256); libc.adjtimex(buf);"
        "libc.syscall(176, b'autosandbox_none', 0)"))  # delete_module: fails, still a need
    assert values(sb, "ProtectKernelLogs") is None
    assert values(sb, "ProtectClock") is None
    assert values(sb, "ProtectKernelModules") is None


def test_device_node_gets_device_allow() -> None:
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("this machine has no /dev/loop-control")
    sb, text = checked_dropin(trace_python("import os; os.close(os.open('/dev/loop-control', "
                                           "os.O_RDONLY))"))
    assert values(sb, "PrivateDevices") is None
    assert values(sb, "DevicePolicy") == ["closed"]
    assert "DeviceAllow=/dev/loop-control r" in text


def test_setuid_bits_and_setuid_exec(scratch: Path) -> None:
    f = scratch / "tool"
    f.write_text("")
    sb, _ = checked_dropin(trace_python(f"import os; os.chmod({str(f)!r}, 0o4755)"))
    assert values(sb, "RestrictSUIDSGID") is None
    su = "/usr/bin/su" if os.path.exists("/usr/bin/su") else "/bin/su"
    sb, _ = checked_dropin(trace_python(
        f"import subprocess; subprocess.run([{su!r}, '--version'], capture_output=True)"))
    assert values(sb, "NoNewPrivileges") is None
    assert "setuid" in omitted(sb)["NoNewPrivileges"]


def test_proc_subset_needs_only_own_process() -> None:
    sb, _ = checked_dropin(trace_python("open('/proc/self/status').read()"))
    assert values(sb, "ProcSubset") == ["pid"]
    sb, _ = checked_dropin(trace_python("open('/proc/meminfo').read()"))
    assert values(sb, "ProcSubset") is None


def test_older_or_bpf_less_target_is_honoured() -> None:
    from autosandbox.synth.synthesize import synthesize
    from autosandbox.synth.target import target_for
    profile = trace_python("import socket; s=socket.socket(); s.bind(('127.0.0.1', 0))")
    old = synthesize(profile, target_for(240, bpf=False))
    assert old.values("ProtectClock") is None  # 245
    assert "needs systemd 245" in omitted(old)["ProtectClock"]
    new = synthesize(profile, target_for(255, bpf=True))
    assert new.values("SocketBindDeny") == ["any"]
    assert new.values("SocketBindAllow") is None  # port 0 is ephemeral, not a service port
    no_bpf = synthesize(profile, target_for(255, bpf=False))
    assert "BPF_FRAMEWORK" in omitted(no_bpf)["SocketBindDeny"]
