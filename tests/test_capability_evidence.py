"""Capabilities from evidence: what a root master wrote into a directory another user owns
(trace + the host facts at trace time), signals to processes of another uid, socket options
that were probes. The trace lines are haproxy 2.6's (Debian 12), recorded with strace -f -y in
the integration container; the pids are theirs (377 the master, 379 a worker)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from autosandbox.profile import Fact, Profile
from autosandbox.synth.capneed import dac_capability, needed_capability
from autosandbox.synth.model import Denial
from autosandbox.synth.synthesize import synthesize
from autosandbox.synth.target import Target
from autosandbox.trace.command import trace_command
from autosandbox.trace.dac import infer_root_writes
from autosandbox.trace.facts import record_facts
from autosandbox.validate.denials import parse_denials

from .conftest import PYTHON
from .conftest import record as recorded

CLONE = ("377 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
         "child_tidptr=0x7f6c1a5f0a10) = 379")
MASTER_SOCKETS = [  # the stats socket in /run/haproxy, then the master CLI socket in /run
    '377 unlink("/run/haproxy/admin.sock.377.tmp") = -1 ENOENT (No such file or directory)',
    '377 unlink("/run/haproxy/admin.sock.377.bak") = -1 ENOENT (No such file or directory)',
    '377 link("/run/haproxy/admin.sock", "/run/haproxy/admin.sock.377.bak") = 0',
    '377 bind(8<socket:[1833873]>, {sa_family=AF_UNIX, sun_path="/run/haproxy/admin.sock.377.tmp"}'
    ', 110) = 0',
    '377 chmod("/run/haproxy/admin.sock.377.tmp", 0660) = 0',
    '377 rename("/run/haproxy/admin.sock.377.tmp", "/run/haproxy/admin.sock") = 0',
    '377 unlink("/run/haproxy/admin.sock.377.bak") = 0',
    '377 link("/run/haproxy-master.sock", "/run/haproxy-master.sock.377.bak") = 0',
    '377 bind(9<socket:[1833875]>, {sa_family=AF_UNIX, sun_path="/run/haproxy-master.sock.377.tmp"}'
    ', 110) = 0',
    '377 rename("/run/haproxy-master.sock.377.tmp", "/run/haproxy-master.sock") = 0',
    '377 unlink("/run/haproxy-master.sock.377.bak") = 0',
    '377 unlink("/run/haproxy.pid")        = 0',
]
WORKER = [
    CLONE,
    '379 chroot("/var/lib/haproxy")        = 0',
    '379 setgid(103)                       = 0',
    '379 setuid(101)                       = 0',
]
# Host facts as recorded in the container: /run/haproxy is haproxy:haproxy 2775.
HOST = {
    "/": Fact("dir", 0, 0, 0o755), "/run": Fact("dir", 0, 0, 0o755),
    "/run/haproxy": Fact("dir", 101, 103, 0o2775),
    "/run/haproxy/admin.sock": Fact("socket", 0, 103, 0o660),
}


def record(lines: list[str], uid: int = 0, gid: int = 0) -> Profile:
    return recorded(lines, roots=(377,), uid=uid, gid=gid)


def with_facts(profile: Profile, facts: dict[str, Fact]) -> Profile:
    profile.facts.update(facts)
    return profile


# -- writes of a root master into a directory it does not own ---------------------------------

def test_root_master_writing_into_service_directory_needs_dac_override() -> None:
    profile = with_facts(record(MASTER_SOCKETS), HOST)
    caps = infer_root_writes(profile)
    assert set(caps) == {"CAP_DAC_OVERRIDE"}
    ev = caps["CAP_DAC_OVERRIDE"]
    assert all("/run/haproxy (uid 101, gid 103, mode 2775)" in e for e in ev), ev
    assert any("/run/haproxy/admin.sock.377.bak" in e for e in ev)
    # the master CLI socket, the pid file: /run lets root in by its bits, no evidence there
    assert not any("haproxy-master" in e or "haproxy.pid" in e for e in ev)


@pytest.mark.parametrize("fact", [
    Fact("dir", 0, 0, 0o755),  # root's own
    Fact("dir", 101, 0, 0o2775),  # root's group may write
    Fact("dir", 101, 103, 0o2777),  # anyone may write
])
def test_no_capability_where_the_bits_let_root_write(fact: Fact) -> None:
    profile = with_facts(record(MASTER_SOCKETS), {**HOST, "/run/haproxy": fact})
    assert infer_root_writes(profile) == {}


def test_directory_the_service_changed_itself_proves_nothing() -> None:
    # It made the directory another user's itself: the end-of-trace facts are its doing.
    lines = ['377 chown("/run/haproxy", 101, 103) = 0', '377 chmod("/run/haproxy", 02755) = 0',
             *MASTER_SOCKETS]
    profile = with_facts(record(lines), HOST)
    assert infer_root_writes(profile) == {}
    assert "CAP_DAC_OVERRIDE" not in profile.capabilities


def test_open_with_o_creat_proves_a_new_name_only_with_o_excl() -> None:
    # A pid file opened O_CREAT without O_EXCL may have been there already: no write to the
    # directory is proven. Removed at stop (traced), or made with O_EXCL, it is.
    facts = {**HOST, "/run/svc": Fact("dir", 101, 103, 0o755),
             "/run/svc/svc.pid": Fact("file", 0, 0, 0o644)}
    opened = ['377 openat(AT_FDCWD, "/run/svc/svc.pid", O_WRONLY|O_CREAT|O_TRUNC, 0644) = '
              '5</run/svc/svc.pid>']
    assert infer_root_writes(with_facts(record(opened), facts)) == {}
    removed = [*opened, '377 unlink("/run/svc/svc.pid") = 0']
    assert set(infer_root_writes(with_facts(record(removed), facts))) == {"CAP_DAC_OVERRIDE"}
    excl = ['377 openat(AT_FDCWD, "/run/svc/svc.pid", O_WRONLY|O_CREAT|O_EXCL, 0644) = '
            '5</run/svc/svc.pid>']
    assert set(infer_root_writes(with_facts(record(excl), facts))) == {"CAP_DAC_OVERRIDE"}
    # an existing file root cannot write by its bits, opened for writing
    theirs = {**facts, "/run/svc/svc.pid": Fact("file", 101, 103, 0o644)}
    caps = infer_root_writes(with_facts(record(opened), theirs))
    assert caps == {"CAP_DAC_OVERRIDE": [
        "wrote /run/svc/svc.pid as root: /run/svc/svc.pid (uid 101, gid 103, mode 0644) is "
        "not writable by root by its mode bits"]}


def test_writes_after_dropping_root_are_not_root_writes() -> None:
    # The same writes by a worker that became haproxy:haproxy, and by a root process that
    # moved its fsuid away or joined supplementary groups: no owner/mode evidence for root.
    worker = record([*WORKER, *(line.replace("377 ", "379 ", 1) for line in MASTER_SOCKETS)])
    assert not any(p.startswith("/run/haproxy/") for p in worker.root_writes)
    fsuid = record(['377 setfsuid(101) = 0', *MASTER_SOCKETS])
    assert fsuid.root_writes == {}
    groups = record(['377 setgroups(1, [103]) = 0', *MASTER_SOCKETS])
    assert groups.root_writes == {}
    started_as_user = record(MASTER_SOCKETS, uid=101, gid=103)
    assert started_as_user.root_writes == {}


def test_record_facts_adds_the_capability_with_its_evidence(tmp_path: Path) -> None:
    service_dir = tmp_path / "svc"
    service_dir.mkdir()
    os.chown(service_dir, 65534, 65534)
    service_dir.chmod(0o2775)
    sock = f"{service_dir}/ctl.sock"
    lines = [f'377 bind(8<socket:[9]>, {{sa_family=AF_UNIX, sun_path="{sock}"}}, 110) = 0']
    profile = record(lines)
    record_facts(profile)
    ev = profile.capabilities["CAP_DAC_OVERRIDE"].examples
    assert ev and f"{service_dir} (uid 65534, gid 65534, mode 2775)" in ev[0], ev
    sb = synthesize(profile, Target(252, frozenset()))
    assert "CAP_DAC_OVERRIDE" in (sb.values("CapabilityBoundingSet") or [])
    line = next(s for s in sb.settings if s.directive == "CapabilityBoundingSet")
    assert "CAP_DAC_OVERRIDE: create" in line.evidence and str(service_dir) in line.evidence
    # the same directory made root's: nothing to prove
    os.chown(service_dir, 0, 0)
    again = record(lines)
    record_facts(again)
    assert "CAP_DAC_OVERRIDE" not in again.capabilities


# -- signals to another uid --------------------------------------------------------------------

def test_master_signalling_its_worker_needs_cap_kill() -> None:
    profile = record([*WORKER, '377 kill(379, SIGTERM)                = 0'])
    assert profile.capabilities["CAP_KILL"].examples == [
        "kill() to pid 379 (uid 101) by uid 0"]


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as another user")
def test_reload_signalling_the_main_process_of_another_uid_needs_cap_kill() -> None:
    """ExecReload=/bin/kill -HUP $MAINPID: the main process is another Exec line's, so its
    ids are read from /proc (dnsmasq and mosquitto drop to their own user)."""
    for user, caps in ((65534, {"CAP_KILL"}), (0, set())):
        main = subprocess.Popen(["sleep", "60"], user=user)
        try:
            line = f"377 kill({main.pid}, SIGHUP) = 0"
            assert set(record([line]).capabilities) == caps
            assert record([line], uid=user).capabilities == {}  # its own uid: no capability
        finally:
            main.kill()
            main.wait()


@pytest.mark.parametrize("lines", [
    ['377 kill(379, SIGTERM) = 0'],  # the worker kept root's uid
    [*WORKER, '377 kill(0, SIGTERM) = 0'],  # its process group: who, is not known
    [*WORKER, '377 kill(-379, SIGTERM) = 0'],
    [*WORKER, '377 kill(379, SIGCONT) = 0'],  # allowed within the session
    [*WORKER, '377 kill(379, SIGTERM) = -1 EPERM (Operation not permitted)'],
    [*WORKER, '377 kill(999999999, SIGTERM) = 0'],  # no such process (any more)
    [*WORKER[:-1], '379 setresuid(-1, 101, -1) = 0', '377 kill(379, SIGTERM) = 0'],  # saved 0
    [*WORKER, '379 kill(377, SIGUSR1) = -1 EPERM (Operation not permitted)'],
])
def test_signals_that_prove_no_cap_kill(lines: list[str]) -> None:
    assert "CAP_KILL" not in record(lines).capabilities


# -- socket options: probes are not needs -----------------------------------------------------

BIND = ('377 bind(6<socket:[1833869]>, {sa_family=AF_INET, sin_port=htons(8405), '
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 0')


@pytest.mark.parametrize(("lines", "caps"), [
    # set on a socket closed unused: a probe of what the kernel allows
    (['377 setsockopt(5<socket:[1833867]>, SOL_IP, IP_TRANSPARENT, [1], 4) = 0'], set()),
    # turned off: the kernel checks nothing
    (['377 setsockopt(6<socket:[1833869]>, SOL_IP, IP_TRANSPARENT, [0], 4) = 0', BIND], set()),
    (['377 setsockopt(6<socket:[1833869]>, SOL_SOCKET, SO_DEBUG, [0], 4) = 0', BIND], set()),
    # turned on, then bound: a transparent listener
    (['377 setsockopt(6<socket:[1833869]>, SOL_IP, IP_TRANSPARENT, [1], 4) = 0', BIND],
     {"CAP_NET_ADMIN"}),
    (['377 setsockopt(6<socket:[1833869]>, SOL_SOCKET, SO_MARK, [7], 4) = 0', BIND],
     {"CAP_NET_ADMIN"}),
    # the options haproxy really sets on its listeners need nothing
    (['377 setsockopt(6<socket:[1833869]>, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0',
      '377 setsockopt(6<socket:[1833869]>, SOL_SOCKET, SO_REUSEPORT, [1], 4) = 0', BIND,
      '377 setsockopt(6<socket:[1833869]>, SOL_SOCKET, SO_LINGER, {l_onoff=0, l_linger=0}, 8) = 0',
      '377 setsockopt(6<socket:[1833869]>, SOL_TCP, TCP_DEFER_ACCEPT, [0], 4) = 0'], set()),
])
def test_socket_option_capabilities(lines: list[str], caps: set[str]) -> None:
    assert set(record(lines).capabilities) == caps


def test_socket_option_evidence_names_the_use() -> None:
    profile = record(['377 setsockopt(6<socket:[1833869]>, SOL_IP, IP_TRANSPARENT, [1], 4) = 0',
                      BIND])
    assert profile.capabilities["CAP_NET_ADMIN"].examples == [
        "privileged socket option turned on (setsockopt IP_TRANSPARENT) on a socket then bind()"]


# libsystemd's sd_notify (fd_inc_sndbuf), recorded from `systemd-notify --ready` as root on
# this host: SO_SNDBUF, then SO_SNDBUFFORCE on the same socket, results ignored.
NOTIFY = [
    '13897 socket(AF_UNIX, SOCK_DGRAM|SOCK_CLOEXEC, 0) = 3<socket:[1932326]>',
    '13897 setsockopt(3<socket:[1932326]>, SOL_SOCKET, SO_SNDBUF, [8388608], 4) = 0',
    '13897 setsockopt(3<socket:[1932326]>, SOL_SOCKET, SO_SNDBUFFORCE, [8388608], 4) = 0',
    '13897 sendmsg(3<socket:[1932326]>, {msg_name={sa_family=AF_UNIX, '
    'sun_path="/run/systemd/notify"}, msg_namelen=22, msg_iov=[{iov_base="READY=1", '
    'iov_len=7}], msg_iovlen=1, msg_control=[{cmsg_len=28, cmsg_level=SOL_SOCKET, '
    'cmsg_type=SCM_CREDENTIALS, cmsg_data={pid=13897, uid=0, gid=0}}], msg_controllen=32, '
    'msg_flags=0}, MSG_NOSIGNAL) = 7',
]


def test_forced_buffer_after_a_plain_one_is_no_need() -> None:
    """The notify socket of every Type=notify service on libsystemd: no CAP_NET_ADMIN."""
    profile = record([line.replace("13897 ", "377 ", 1) for line in NOTIFY])
    assert profile.capabilities == {}
    # forced without trying the plain size first, on a socket then used: the program wants it
    forced = [line.replace("13897 ", "377 ", 1) for line in NOTIFY if "SO_SNDBUF," not in line]
    assert set(record(forced).capabilities) == {"CAP_NET_ADMIN"}


# -- validation: a denial on a name root could use, in a directory it cannot write -----------

def test_denial_on_a_name_in_a_directory_root_cannot_write(tmp_path: Path) -> None:
    run = tmp_path / "run" / "haproxy"
    run.mkdir(parents=True)
    sock = run / "admin.sock"
    sock.write_text("")
    sock.chmod(0o660)  # root's own file: the bits let root in
    os.chown(run, 65534, 65534)
    run.chmod(0o2775)
    line = (f"[ALERT]    (8450) : Binding [/etc/haproxy/zoo-test.cfg:5] for frontend GLOBAL: "
            f"error when trying to preserve previous UNIX socket (Permission denied) [{sock}]")
    [dn] = parse_denials([line])
    cap, why = needed_capability(dn, may_be_root=True, have=set())
    assert cap == "CAP_DAC_OVERRIDE", why
    assert f"{run} (uid 65534, gid 65534, mode 2775)" in why
    # the unit runs as another user: no capability would help
    assert needed_capability(dn, may_be_root=False, have=set())[0] is None
    # root's own directory: a plain ownership/config problem, no capability
    os.chown(run, 0, 0)
    assert dac_capability(str(sock))[0] is None


def test_opening_proc_kmsg_needs_cap_syslog() -> None:
    # Debian's rsyslog (imklog): its learned sandbox had CapabilityBoundingSet= empty and
    # the trial logged "imklog: cannot open kernel log (/proc/kmsg): Operation not permitted".
    # The line is strace -f -y of an open of /proc/kmsg as root on this host.
    line = '377 openat(AT_FDCWD</tmp>, "/proc/kmsg", O_RDONLY|O_CLOEXEC) = 3</proc/kmsg>'
    profile = record([line])
    assert profile.capabilities.get("CAP_SYSLOG") is not None
    failed = '377 openat(AT_FDCWD</tmp>, "/proc/kmsg", O_RDONLY) = -1 EPERM (Operation not ' \
        'permitted)'
    assert "CAP_SYSLOG" not in record([failed]).capabilities
    inside = ['377 unshare(CLONE_NEWUSER) = 0', line]  # its own user namespace: no need
    assert "CAP_SYSLOG" not in record(inside).capabilities


def test_rsyslogs_kmsg_denial_relaxes_to_cap_syslog() -> None:
    line = "imklog: cannot open kernel log (/proc/kmsg): Operation not permitted."  # as logged
    [dn] = parse_denials([line])
    assert (dn.kind, dn.path) == ("eperm", "/proc/kmsg")
    assert needed_capability(dn, may_be_root=True, have=set())[0] == "CAP_SYSLOG"
    assert needed_capability(dn, may_be_root=False, have=set())[0] is None


# -- a mode change of a file root does not own ------------------------------------------------

ROOT = os.geteuid() == 0


@pytest.mark.skipif(not ROOT, reason="needs root (a file of another owner)")
@pytest.mark.parametrize("call", [
    '377 chmod("{f}", 0640) = 0',
    "377 fchmod(5<{f}>, 0640) = 0",
    '377 fchmodat(AT_FDCWD, "{f}", 0640) = 0',
])
def test_root_changing_the_mode_of_a_file_it_does_not_own_needs_fowner(
        call: str, tmp_path: Path) -> None:
    """exim4's root delivery process gives each message log to Debian-exim, chmods it and
    deletes it once delivered: without CAP_FOWNER every delivery failed ("Couldn't chmod
    message log ... Operation not permitted"). The owner is the one when the line is read."""
    log = tmp_path / "msglog" / "1xaeF6-0001tA-1D"
    log.parent.mkdir()
    log.write_text("")
    lines = [f"377 fchown(5<{log}>, 65534, 65534) = 0", call.format(f=log)]
    os.chown(log, 65534, 65534)  # as the fchown left it
    profile = record(lines)
    log.unlink()  # gone by the end of the trace: nothing to read then
    assert profile.capabilities["CAP_FOWNER"].examples == [
        f"{call.split()[1].split('(')[0]} {log} (owned by uid 65534) by uid 0"]


@pytest.mark.skipif(not ROOT, reason="needs root (a file of another owner)")
def test_no_fowner_for_its_own_files_or_a_refused_change(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.write_text("")
    assert "CAP_FOWNER" not in record([f'377 chmod("{mine}", 0640) = 0']).capabilities
    theirs = tmp_path / "theirs"
    theirs.write_text("")
    os.chown(theirs, 65534, 65534)
    refused = f'377 chmod("{theirs}", 0640) = -1 EPERM (Operation not permitted)'
    assert "CAP_FOWNER" not in record([refused]).capabilities
    # a process running as the owner changes the mode of its own file: nothing to learn
    assert "CAP_FOWNER" not in record([f'377 chmod("{theirs}", 0640) = 0'], uid=65534,
                                      gid=65534).capabilities


@pytest.mark.parametrize("message", [
    "chmod: changing permissions of '{f}': Operation not permitted",  # coreutils
    "Couldn't chmod message log {d}//{b}: Operation not permitted",  # exim4's paniclog
])
def test_a_refused_mode_change_of_another_users_file_relaxes_to_fowner(
        message: str, tmp_path: Path) -> None:
    log = tmp_path / "msglog"
    log.write_text("")
    os.chown(log, 65534, 65534)
    line = message.format(f=log, d=log.parent, b=log.name)
    [dn] = parse_denials([line])
    assert (dn.kind, dn.path, dn.syscall) == ("eperm", str(log), "chmod")
    cap, why = needed_capability(dn, may_be_root=True, have=set())
    assert cap == "CAP_FOWNER" and f"{log} (uid 65534, gid 65534" in why, why
    assert needed_capability(dn, may_be_root=False, have=set())[0] is None
    # audit names the call itself
    audited = Denial("eperm", str(log), "audit", "fchmod() = EPERM", "fchmod", None, 0)
    assert needed_capability(audited, may_be_root=True, have=set())[0] == "CAP_FOWNER"
    os.chown(log, 0, 0)  # root's own: the refusal is something else (a read-only mount...)
    assert needed_capability(dn, may_be_root=True, have=set())[0] is None


# -- what /proc shows of another uid's process -------------------------------------------------

def test_root_reading_proc_exe_of_a_process_of_another_uid_needs_sys_ptrace() -> None:
    """exim4's init script (start-stop-daemon --stop --exec) reads /proc/PID/exe of its
    Debian-exim daemon as root: without CAP_SYS_PTRACE the stop found nothing to stop."""
    read = '377 readlink("/proc/379/exe", "/usr/sbin/haproxy", 4096) = 17'
    profile = record([*WORKER, read, '377 openat(AT_FDCWD, "/proc/379/environ", O_RDONLY) = 5'])
    assert profile.capabilities["CAP_SYS_PTRACE"].examples == [
        "readlink /proc/379/exe of pid 379 (uid 101) by uid 0",
        "openat /proc/379/environ of pid 379 (uid 101) by uid 0"]


@pytest.mark.parametrize("lines", [
    [CLONE, '377 readlink("/proc/379/exe", "/usr/sbin/haproxy", 4096) = 17'],  # root's too
    [*WORKER, '377 readlink("/proc/377/exe", "/usr/sbin/haproxy", 4096) = 17'],  # its own
    [*WORKER, '377 newfstatat(AT_FDCWD, "/proc/379/exe", {st_mode=S_IFLNK|0777, st_size=0, '
              '...}, AT_SYMLINK_NOFOLLOW) = 0'],  # a look at the link: no ptrace check
    [*WORKER, '377 openat(AT_FDCWD, "/proc/379/status", O_RDONLY) = 5'],  # open to anyone
    [*WORKER, '377 readlink("/proc/379/exe", 0x7ffd5e7a1e50, 4096) = -1 EACCES (Permission '
              'denied)'],  # refused: nothing was needed
])
def test_no_sys_ptrace_for_own_processes_or_what_proc_shows_anyone(lines: list[str]) -> None:
    assert "CAP_SYS_PTRACE" not in record(lines).capabilities


@pytest.mark.skipif(not ROOT, reason="needs root (a setuid program of root's)")
@pytest.mark.parametrize("no_new_privs", [False, True])
def test_a_setuid_root_program_run_by_another_uid_is_root_until_it_drops(
        no_new_privs: bool, tmp_path: Path) -> None:
    """exim4's daemon (uid 109) runs /usr/sbin/exim4, root's and setuid, for each delivery:
    that process is root (effective and saved), calls setgid(115) and setuid(0), and chmods
    the message log it gave to Debian-exim. Taken for uid 109, its setuid(0) split the ids
    and its fchmod proved nothing. Under no_new_privs the bit is ignored: it stays 65534."""
    if os.statvfs(tmp_path).f_flag & os.ST_NOSUID:
        pytest.skip("the temporary directory is mounted nosuid")
    prog = tmp_path / "suid-prog"
    prog.write_bytes(b"")
    prog.chmod(0o4755)  # root's own, set-user-ID
    log = tmp_path / "msglog"
    log.write_text("")
    os.chown(log, 65534, 65534)
    # a live process stands for the one that exec'd (its no_new_privs is read as lines arrive)
    argv = ["setpriv", "--no-new-privs", "sleep", "60"] if no_new_privs else ["sleep", "60"]
    with subprocess.Popen(argv) as live:
        time.sleep(0.2)  # setpriv has set the flag and become sleep
        pid = live.pid
        lines = [f'{pid} execve("{prog}", ["{prog}", "-Mc", "1xaeYa"], 0x7ffd5e7a1e50 /* 3 vars */)'
                 " = 0", f"{pid} setgid(65534) = 0", f"{pid} setuid(0) = 0",
                 f"{pid} fchmod(4<{log}>, 0640) = 0"]
        profile = recorded(lines, roots=(pid,), uid=65534, gid=65534)
        live.kill()
    if no_new_privs:  # still uid 65534: its own file
        assert "CAP_FOWNER" not in profile.capabilities
    else:
        assert profile.capabilities["CAP_FOWNER"].examples == [
            f"fchmod {log} (owned by uid 65534) by uid 0"]
        assert "CAP_SETUID" not in profile.capabilities  # setuid(0) as root changes nothing


@pytest.mark.skipif(not ROOT, reason="needs root (a socket of another owner)")
def test_root_connecting_to_a_socket_another_user_owns_needs_dac_override(
        tmp_path: Path) -> None:
    """dovecot's root master connects to its stale login sockets (dovenull's, 0600) before it
    makes them anew: without CAP_DAC_OVERRIDE the connect fails with EACCES, and dovecot stops
    with "Dovecot is already running?". ECONNREFUSED (no listener) passed the check. A real
    run: the socket's owner and mode are read as the line arrives."""
    base = tmp_path / "login"
    base.mkdir()
    base.chmod(0o755)
    theirs, mine = base / "ipc-proxy", base / "mine"
    for path in (theirs, mine):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()  # no listener: a stale socket, as dovecot finds its own at start
        path.chmod(0o600)
    os.chown(theirs, 65534, 65534)
    code = ("import socket, sys\n"
            "for p in sys.argv[1:]:\n"
            "    try: socket.socket(socket.AF_UNIX).connect(p)\n"
            "    except ConnectionRefusedError: pass\n")
    result = trace_command([PYTHON, "-c", code, str(theirs), str(mine)], cwd="/")
    assert result.exit_code == 0, result.profile.warnings
    caps = result.profile.capabilities
    assert "CAP_DAC_OVERRIDE" in caps, caps
    # (where tracefs works, the kernel's capability checks show it too; not in a container)
    assert f"connect to {theirs} (uid 65534, gid 65534, mode 0600), which root cannot write " \
        "by its mode bits" in caps["CAP_DAC_OVERRIDE"].examples, caps["CAP_DAC_OVERRIDE"]
    assert not any(str(mine) in e for e in caps["CAP_DAC_OVERRIDE"].examples)
    # as the owner of neither, a refused connect proves nothing
    refused = f'377 connect(3<socket:[9]>, {{sa_family=AF_UNIX, sun_path="{theirs}"}}, 110)' \
        " = -1 EACCES (Permission denied)"
    assert "CAP_DAC_OVERRIDE" not in recorded([refused]).capabilities
