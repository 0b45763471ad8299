"""A traced program (or another user) trying to make the tracer record more than was needed:
long paths, symlinks and `..`, forged trace lines and gate announcements, namespaces without
capabilities, capability look-alikes, many paths, privileged Exec lines. Each case says what
the profile and the drop-in may and may not hold."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from autosandbox.profile import GROUP_LIMIT, Profile
from autosandbox.systemd.manager import ExecLine
from autosandbox.trace import opens
from autosandbox.trace.command import trace_command
from autosandbox.trace.facts import record_facts
from autosandbox.trace.gate import GateServer, proc_cgroup, shim_script, slice_cgroup
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.strace_parser import StraceParser
from autosandbox.trace.stream import TraceStream
from autosandbox.trace.tracefs import syscall_tracer_available
from autosandbox.trace.unit import merge_lines

from .conftest import PYTHON, record, sandbox_for

NOBODY = 65534
TRACERS = [pytest.param(False, id="full"),
           pytest.param(True, id="fast", marks=pytest.mark.skipif(
               not (os.geteuid() == 0 and syscall_tracer_available() and opens.available()),
               reason="the fast tracer needs root, tracefs and bpftrace"))]


def rw_paths(profile: Profile) -> list[str]:
    return sandbox_for(profile).values("ReadWritePaths") or []


def trace(code: str, fast: bool, *args: str) -> Profile:
    result = trace_command([PYTHON, "-c", code, *args], cwd="/", fast=fast)
    assert result.exit_code == 0, result.profile.warnings
    return result.profile


# -- forged trace lines ----------------------------------------------------------------------

FORGED = [
    '100 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 3<socket:[1]>',
    '666 socket(AF_PACKET, SOCK_RAW, 768) = 4<socket:[2]>',
    '666 mount("none", "/mnt", "tmpfs", 0, NULL) = 0',
    '666 openat(AT_FDCWD</>, "/etc/shadow", O_RDWR) = 5</etc/shadow>',
    '100 +++ exited with 0 +++',
]


def test_lines_of_pids_not_followed_never_enter_the_profile() -> None:
    p = record(FORGED, roots=(100,))
    assert set(p.families) == {"AF_INET"}
    assert p.capabilities == {} and "mount" not in p.flags
    assert "/etc/shadow" not in p.paths
    assert any("3 trace lines of processes that were not followed" in w for w in p.warnings)
    # without the fix every pid was taken: AF_PACKET, CAP_NET_RAW, CAP_SYS_ADMIN


def test_a_child_reported_before_its_parents_clone_returns_is_followed() -> None:
    p = record([
        '100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>',
        '101 socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDP) = 3<socket:[9]>',
        '101 clone(child_stack=NULL, flags=SIGCHLD) = 102',
        '102 socket(AF_UNIX, SOCK_STREAM, 0) = 3<socket:[10]>',
        '100 <... clone resumed>) = 101',
        '103 socket(AF_PACKET, SOCK_RAW, 768) = 4<socket:[2]>',
    ], roots=(100,))
    assert set(p.families) == {"AF_INET6", "AF_UNIX"}
    assert "CAP_NET_RAW" not in p.capabilities
    assert any("1 trace lines" in w and "103" in w for w in p.warnings)


def test_trace_fifo_is_root_only(tmp_path: Path) -> None:
    stream = TraceStream(Recorder(Profile(), "/"), fifo_dir=tmp_path)
    try:
        st = os.lstat(stream.fifo)
        assert stat.S_ISFIFO(st.st_mode) and st.st_uid == 0
        assert stat.S_IMODE(st.st_mode) == 0o600
        if os.geteuid() == 0:
            os.chmod(stream.dir, 0o711)  # as for a unit: others may reach it by name
            opened = subprocess.run(
                [PYTHON, "-c", f"import os; os.open({str(stream.fifo)!r}, os.O_WRONLY)"],
                user=NOBODY, capture_output=True, text=True, timeout=20)
            assert opened.returncode != 0 and "Permission denied" in opened.stderr
    finally:
        stream.close(timeout=5)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as nobody")
def test_forged_gate_announcements_are_refused(scratch: Path) -> None:
    tmp_path = scratch
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo, 0o600)
    os.chmod(tmp_path, 0o711)
    followed: list[tuple[int, int, int, int]] = []
    gates = GateServer(tmp_path, 1, lambda *a: followed.append(a),
                       cgroup="/system.slice/not-this.service", fifos=[fifo])
    try:
        # nobody, outside the unit's control group, announces itself and a foreign pid
        forger = subprocess.run(
            ["/bin/sh", "-c", f"echo \"$$ 0\" > '{gates.control}'; echo '1 0' > "
             f"'{gates.control}'; echo 'junk' > '{gates.control}'"],
            user=NOBODY, timeout=20)
        assert forger.returncode == 0  # the control FIFO is writable: what it says is checked
        deadline = time.monotonic() + 20
        while gates.refused_count < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gates.close()
    assert followed == []
    assert gates.refused_count == 3 and gates.opened == 0
    st = os.lstat(fifo)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)  # never handed over
    assert "not believed" in gates.warnings()[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as nobody")
def test_a_believed_announcement_hands_the_fifo_to_that_uid_and_strace_keeps_its_pid(
        scratch: Path) -> None:
    tmp_path = scratch
    fifo_dir = tmp_path / "run"
    fifo_dir.mkdir(mode=0o711)
    os.chmod(tmp_path, 0o711)
    stream = TraceStream(Recorder(Profile(), "/", first_is_root=False), fifo_dir=fifo_dir)
    os.chmod(stream.dir, 0o711)
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir(mode=0o711)
    followed: list[int] = []

    def follow(pid: int, index: int, uid: int, gid: int) -> None:
        followed.append(pid)
        stream.recorder.add_root(pid, uid, gid)

    gates = GateServer(gate_dir, 1, follow, cgroup=proc_cgroup(os.getpid()),
                       fifos=[stream.fifo])
    try:
        script = shim_script(gates.control, gates.gates[0], 0)
        proc = subprocess.run(
            ["/bin/sh", "-c", script, "shim", "strace", "-D", "-f", "-y", "-q", "-o",
             str(stream.fifo), "--", PYTHON, "-c",
             "import os, socket; print(os.getpid()); socket.socket(socket.AF_UNIX)"],
            user=NOBODY, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert os.lstat(stream.fifo).st_uid == NOBODY
    finally:
        gates.close()
        profile = stream.close(timeout=20)
    # strace -D: the traced program keeps the pid the shell announced
    assert followed == [int(proc.stdout.strip())]
    assert "AF_UNIX" in profile.families
    assert not [w for w in profile.warnings if "not followed" in w]


# -- capabilities only from calls that need them ---------------------------------------------

def test_capabilities_only_from_calls_that_need_them() -> None:
    quiet = record([
        '100 socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE) = 3<socket:[1]>',
        '100 socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) = 4<socket:[2]>',
        *(f'100 setsockopt(5<socket:[3]>, {lvl}, {opt}, [1], 4) = 0' for lvl, opt in (
            ("SOL_SOCKET", "SO_LINGER"), ("SOL_SOCKET", "SO_REUSEADDR"),
            ("SOL_SOCKET", "SO_REUSEPORT"), ("SOL_TCP", "TCP_DEFER_ACCEPT"),
            ("SOL_TCP", "TCP_NODELAY"), ("SOL_TCP", "TCP_QUICKACK"),
            ("SOL_TCP", "TCP_USER_TIMEOUT"), ("SOL_SOCKET", "SO_SNDBUF"))),
        '100 chown("/srv/own", 1000, 1000) = 0',
        '100 fchown(6</srv/own>, -1, 1000) = 0',
        '100 unshare(CLONE_NEWUSER|CLONE_NEWNS) = 0',
        '100 mount("none", "/mnt", "tmpfs", 0, NULL) = 0',
        '100 sethostname("x", 1) = 0',
        '100 clone(child_stack=NULL, flags=CLONE_NEWUSER|CLONE_NEWNET|SIGCHLD) = 101',
        '101 setuid(0) = 0',
    ], roots=(100,), uid=1000, gid=1000)
    assert quiet.capabilities == {}, quiet.capabilities
    quiet_root = record(['100 setgroups(2, [0, 27]) = 0', '100 fchown(6</srv/own>, -1, 27) = 0'],
                        roots=(100,))
    assert set(quiet_root.capabilities) == {"CAP_SETGID"}
    loud = record([
        '100 socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) = 3<socket:[1]>',
        '100 socket(AF_PACKET, SOCK_DGRAM, 768) = 4<socket:[2]>',
        '100 setsockopt(5<socket:[3]>, SOL_SOCKET, SO_MARK, [1], 4) = 0',
        '100 connect(5<socket:[3]>, {sa_family=AF_INET, sin_port=htons(80), '
        'sin_addr=inet_addr("10.0.0.1")}, 16) = 0',  # a marked socket in use, not a probe
        '100 chown("/srv/x", 33, 33) = 0',
        '100 unshare(CLONE_NEWNS) = 0',
    ], roots=(100,))
    assert set(loud.capabilities) == {"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_CHOWN",
                                      "CAP_SYS_ADMIN"}


@pytest.mark.parametrize("fast", TRACERS)
def test_namespaces_without_capabilities(fast: bool) -> None:
    """unshare -Urm: a user namespace of its own, where mount needs none of the host's
    capabilities (tracefs cap_capable sees checks granted there: not ours either)."""
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    result = trace_command(["unshare", "-Urm", "mount", "-t", "tmpfs", "none", "/mnt"],
                           cwd="/", fast=fast)
    assert result.exit_code == 0, result.profile.warnings
    p = result.profile
    assert {"CLONE_NEWUSER", "CLONE_NEWNS"} <= set(p.flags["namespaces"].examples)
    assert "CAP_SYS_ADMIN" not in p.capabilities, p.capabilities
    bounding = sandbox_for(p).values("CapabilityBoundingSet") or []
    assert "CAP_SYS_ADMIN" not in bounding


# -- paths read whole and resolved as the kernel did ---------------------------------------

@pytest.mark.parametrize("fast", TRACERS)
def test_a_path_too_long_to_read_whole_widens_nothing(fast: bool, scratch: Path) -> None:
    deep = scratch / ("t" * 220)
    trace("import os, sys; os.makedirs(sys.argv[1]); open(sys.argv[1] + '/f', 'w')", fast,
          str(deep))
    p = trace("import sys; open(sys.argv[1] + '/f', 'w').write('x')", fast, str(deep))
    rw = rw_paths(p)
    ancestors = {str(a) for a in deep.parents}  # the file's own directory may be granted
    assert not ancestors & set(rw), rw  # was ReadWritePaths=/ (fast tracer)
    assert all(not x.startswith(str(deep)[:190]) or x.startswith(str(deep)) for x in rw)


SYMLINK_PROGRAM = """
import os, sys
base = sys.argv[1]
os.rename(base + "/srv/link/a", base + "/srv/link/b")        # directory link, absolute
os.unlink(base + "/srv/rel/c")                                 # directory link, relative
os.mkdir(base + "/srv/link/newdir")
os.chmod(base + "/srv/filelink", 0o600)                        # follows the file link
os.chown(base + "/srv/filelink", os.getuid(), os.getgid())
os.truncate(base + "/srv/filelink", 0)
os.unlink(base + "/srv/deep/../d")                             # .. after a link
os.symlink("/nowhere", base + "/srv/link/made-link")
os.unlink(base + "/srv/dangling-made")                         # a link itself, not followed
"""


@pytest.mark.parametrize("fast", TRACERS)
def test_writes_through_symlinks_are_recorded_where_they_went(fast: bool,
                                                              scratch: Path) -> None:
    target = scratch / "etc-like"
    (target / "inner" / "x").mkdir(parents=True)
    for name in ("a", "c", "file", "d"):
        (target / name).write_text(name)
    srv = scratch / "srv"
    srv.mkdir()
    (srv / "link").symlink_to(target)
    (srv / "rel").symlink_to("../etc-like")
    (srv / "filelink").symlink_to(target / "file")
    (srv / "deep").symlink_to(target / "inner" / "x")  # deep/.. is inner, not srv
    (target / "inner" / "d").write_text("d")
    (srv / "dangling-made").symlink_to("/etc/passwd")
    p = trace(SYMLINK_PROGRAM, fast, str(scratch))
    written = p.written_paths()
    t = str(target)
    assert {"rename"} <= written[f"{t}/a"] and {"rename"} <= written[f"{t}/b"]
    assert "delete" in written[f"{t}/c"]
    assert "mkdir" in written[f"{t}/newdir"]
    assert {"chmod", "chown", "write"} <= written[f"{t}/file"]
    assert "delete" in written[f"{t}/inner/d"]
    assert "create" in written[f"{t}/made-link"]
    assert "delete" in written[f"{srv}/dangling-made"]  # the link, not /etc/passwd
    assert "/etc/passwd" not in written
    assert not [x for x in written if "/srv/link" in x or "/srv/rel" in x
                or x == f"{srv}/filelink" or "/deep/" in x], written
    assert any("written through a symlink" in w for w in p.warnings)
    rw = rw_paths(p)
    assert not [x for x in rw if x.startswith(str(srv)) and x != f"{srv}/dangling-made"
                and x != str(srv)], rw
    assert "/etc" not in rw and "/" not in rw


def test_var_run_and_run_are_one_directory() -> None:
    if os.path.realpath("/var/run") != "/run":
        pytest.skip("/var/run is not a link to /run here")
    p = record(['100 mkdir("/var/run/asb-adv", 0755) = 0',
                '100 unlink("/var/run/asb-adv/pid") = 0'], roots=(100,))
    assert set(p.paths) == {"/run/asb-adv", "/run/asb-adv/pid"}


# -- bounded memory, privileged lines, facts -------------------------------------------------

@pytest.mark.parametrize("fast", TRACERS)
def test_many_sibling_paths_become_one_group(fast: bool, scratch: Path) -> None:
    n = GROUP_LIMIT + 700
    p = trace("import sys\nfor i in range(int(sys.argv[2])):\n"
              "    open(f'{sys.argv[1]}/f{i}', 'w').close()", fast, str(scratch), str(n))
    mine = [x for x in p.paths if x.startswith(f"{scratch}/")]
    assert len(mine) == GROUP_LIMIT
    group = p.path_groups[str(scratch)]
    # bpftrace may lose events on a busy machine: then it says so
    lost = any("lost" in w for w in p.warnings)
    assert group.files == n - GROUP_LIMIT or (lost and group.files < n - GROUP_LIMIT)
    assert {"create", "write"} <= set(group.kinds)
    assert p.accessed(str(scratch)) and f"{scratch}/*" in p.written_paths(with_groups=True)
    assert rw_paths(p) == [str(scratch)]


def test_privileged_lines_stay_out_of_the_profile() -> None:
    pre = Recorder(Profile(), "/", roots=(10,))
    main = Recorder(Profile(), "/", roots=(20,))
    for rec, line in ((pre, '10 mkdir("/etc/prefix-demo", 0755) = 0'),
                      (main, '20 socket(AF_UNIX, SOCK_STREAM, 0) = 3<socket:[1]>')):
        parser = StraceParser(READ_CALLS)
        ev = parser.feed(line)
        assert ev is not None
        rec.handle(ev)
        rec.finish(parser)
    profile = Profile()
    pids, _ = merge_lines(profile, [
        (ExecLine("ExecStartPre", "/bin/sh", ("/bin/sh",), ("privileged",)), pre),
        (ExecLine("ExecStart", "/bin/app", ("/bin/app",), ()), main)])
    assert pids == {20}
    assert "/etc/prefix-demo" not in profile.paths and "AF_UNIX" in profile.families
    assert profile.subject.privileged[0].written == ["/etc/prefix-demo"]
    assert any("runs outside the sandbox" in w and "/etc/prefix-demo" in w
               for w in profile.warnings)


def test_facts_describe_paths_ancestors_and_execs(scratch: Path) -> None:
    (scratch / "dir").mkdir()
    (scratch / "dir" / "f").write_text("x")
    (scratch / "link").symlink_to(scratch / "dir")
    p = Profile()
    p.add_path(f"{scratch}/dir/f", "write")
    p.add_path(f"{scratch}/link", "read")
    p.execs["/bin/sh"] = {"setuid": False, "setgid": False}
    record_facts(p)
    assert p.facts[f"{scratch}/dir/f"].kind == "file"
    assert p.facts[f"{scratch}/dir"].kind == "dir" and p.facts["/"].kind == "dir"
    assert p.facts[f"{scratch}/link"].target == f"{scratch}/dir"
    assert p.execs["/bin/sh"]["elf32"] is False
    assert Profile.from_json(p.to_json()).facts == p.facts


def test_the_units_control_group_is_known_before_it_starts() -> None:
    assert slice_cgroup("system.slice", "web.service") == "/system.slice/web.service"
    nested = "/a.slice/a-b.slice/a-b-c.slice/x@1.service"
    assert slice_cgroup("a-b-c.slice", "x@1.service") == nested
    assert slice_cgroup("-.slice", "x.service") == "/x.service"
    mine = proc_cgroup(os.getpid())
    assert mine is not None and mine.startswith("/")


def test_a_call_resumed_after_a_tracer_stop_is_not_a_call_of_the_program() -> None:
    """strace's own stops make the kernel resume a sleep with restart_syscall (seen in the VM
    under load): it is the tracer's doing, and a fast trace without the stop would differ."""
    p = record(['100 nanosleep({tv_sec=1, tv_nsec=0},  <unfinished ...>',
                '100 <... nanosleep resumed>0x7ffd5a3c1f70) = ? ERESTART_RESTARTBLOCK '
                '(Interrupted by signal)',
                '100 restart_syscall(<... resuming interrupted nanosleep ...>) = 0'],
               roots=(100,))
    assert "nanosleep" in p.syscalls
    assert "restart_syscall" not in p.syscalls


@pytest.mark.parametrize("fast", TRACERS)
def test_a_threads_relative_paths_follow_its_process_chdir(tmp_path: Path, fast: bool) -> None:
    """Threads share one cwd (CLONE_FS): a chdir in the main thread moves the worker too.
    Seen with named: its worker threads' relative names were placed in the cwd they had at
    their birth, and the drop-in withheld '/managed-keys.bind' and hinted --allow-write /."""
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import os, sys, threading\n"
        "go, done = threading.Event(), threading.Event()\n"
        "def worker():\n"
        "    go.wait()\n"
        "    with open('w.tmp', 'w') as f: f.write('x')\n"
        "    os.rename('w.tmp', 'w.final')\n"
        "    os.unlink('w.final')\n"
        "    done.set()\n"
        "t = threading.Thread(target=worker); t.start()\n"
        "os.chdir(sys.argv[1]); go.set(); done.wait(); t.join()\n"
        # a forked child keeps its own cwd: its chdir does not move its parent
        "if os.fork() == 0:\n"
        "    os.chdir('/'); os._exit(0)\n"
        "os.wait()\n"
        "open('after-fork', 'w').close()\n")
    p = trace(code, fast, str(work))
    written = {path for path, kinds in p.paths.items() if set(kinds) & {"create", "rename",
                                                                        "delete", "write"}}
    assert {f"{work}/w.tmp", f"{work}/w.final", f"{work}/after-fork"} <= written, written
    assert not {"/w.tmp", "/w.final", "/after-fork"} & written, written
