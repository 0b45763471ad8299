"""Audit records of failed system calls (EACCES, EPERM, EROFS, EAFNOSUPPORT) while learning
or during a trial, and of the calls a seccomp filter killed. Rules carry a key of their own,
are installed only for that window and removed exactly (the same specs with -d). Records are
matched to the service by pid.

Audit rules cost every process on the machine while loaded, so they filter on the failure
(the kernel only emits for failing calls) and never stay loaded longer than the window.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from autosandbox import commands
from autosandbox.linux.tracefs import in_initial_pid_namespace
from autosandbox.systemd import runstate

log = logging.getLogger(__name__)

ERRNOS = ("EACCES", "EPERM", "EROFS")
_FIELD = re.compile(r"(\w+)=(\{[^}]*\}|\S+)")
_FAMILIES = {"inet": "AF_INET", "inet6": "AF_INET6", "local": "AF_UNIX", "unix": "AF_UNIX",
             "netlink": "AF_NETLINK", "packet": "AF_PACKET", "bluetooth": "AF_BLUETOOTH",
             "alg": "AF_ALG", "vsock": "AF_VSOCK", "can": "AF_CAN", "x25": "AF_X25",
             "ax25": "AF_AX25", "appletalk": "AF_APPLETALK", "key": "AF_KEY"}


@dataclass(frozen=True)
class AuditEvent:
    pid: int
    syscall: str
    errno: str
    path: str | None
    family: str | None  # for socket(): the refused address family
    exe: str
    uid: int | None = None  # effective uid of the caller (validation maps denials to caps)


def unavailable_reason() -> str | None:
    """None when audit can be used here; else why not, in a few words."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("auditctl") is None or shutil.which("ausearch") is None:
        return "auditd is not installed (apt-get install auditd)"
    if not in_initial_pid_namespace():
        return "refused inside a container (separate PID namespace)"
    cp = commands.run(["auditctl", "-s"], check=False)
    if cp.returncode != 0:
        return f"auditctl -s failed: {(cp.stderr or cp.stdout).strip()[:80]}"
    if re.search(r"^enabled 0", cp.stdout, re.M):
        return "audit is disabled in the kernel (audit=0)"
    if not Path("/var/log/audit/audit.log").exists() and \
            commands.run(["pidof", "auditd"], check=False).returncode:
        return "auditd is not running"
    return None


class AuditRules:
    def __init__(self, key: str) -> None:
        self.key = key
        self.specs = [["-F", "arch=b64", "-S", "all", "-F", f"exit=-{e}"] for e in ERRNOS]
        self.specs.append(["-F", "arch=b64", "-S", "socket", "-F", "exit=-EAFNOSUPPORT"])
        self.installed: list[list[str]] = []

    def __enter__(self) -> AuditRules:
        sweep_stale_rules()
        runstate.record("audit", key=self.key, specs=self.specs)
        try:
            for spec in self.specs:
                self.installed.append(spec)  # before: an interrupted auditctl may have added it
                try:
                    commands.run(["auditctl", "-a", "always,exit", *spec, "-k", self.key])
                except commands.ToolError as exc:
                    raise OSError("auditctl refused a rule: "
                                  f"{commands.tail(exc.stderr)[:120]}") from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for spec in self.installed:
            try:
                delete_rule(["always,exit", *spec, "-k", self.key])
            except commands.ToolError as exc:
                log.warning("audit rule left loaded: %s (the next autosandbox run or "
                            "'autosandbox reset' removes it)", exc)
        self.installed = []

    def events(self) -> list[AuditEvent]:
        # ausearch exits 1 when nothing matched: its output is the answer either way
        cp = commands.run(["ausearch", "--input-logs", "-i", "-k", self.key], check=False)
        return parse_ausearch(cp.stdout)


def delete_rule(rule: list[str]) -> bool:
    """`auditctl -d RULE`: True if it removed the rule, False if the rule was not loaded; a
    ToolError if it could not (the rule stays loaded and costs every process)."""
    try:
        commands.run(["auditctl", "-d", *rule])
    except commands.ToolError as exc:
        if "No such file or directory" in exc.stderr:  # the kernel's ENOENT (C locale)
            return False
        raise
    return True


_SECCOMP_TIME = re.compile(r"msg=audit\((\d+)\.(\d+):")
AUDIT_ARCH_X86_64 = "c000003e"


@dataclass(frozen=True)
class SeccompKill:
    pid: int
    syscall: str
    exe: str


def seccomp_kills(since: float, names: dict[int, str]) -> list[SeccompKill]:
    """Calls a seccomp filter killed a process for since `since` (epoch seconds), named by
    `names` (this architecture's table). The kernel logs every kill action to audit; an
    EPERM action it does not log, so trials that need the call's name use the kill action."""
    cp = commands.run(["ausearch", "--input-logs", "-m", "SECCOMP"], check=False)
    return parse_seccomp(cp.stdout, since, names)


def parse_seccomp(text: str, since: float, names: dict[int, str]) -> list[SeccompKill]:
    out: list[SeccompKill] = []
    for line in text.splitlines():
        if not line.startswith("type=SECCOMP"):
            continue
        m = _SECCOMP_TIME.search(line)
        f = dict(_FIELD.findall(line.split("): ", 1)[-1]))
        if m is None or float(f"{m.group(1)}.{m.group(2)}") < since:
            continue
        if f.get("arch") != AUDIT_ARCH_X86_64 or not f.get("syscall", "").isdigit():
            continue
        try:
            pid = int(f["pid"])
        except (KeyError, ValueError):
            continue
        nr = int(f["syscall"])
        out.append(SeccompKill(pid, names.get(nr, f"syscall {nr}"), f.get("exe", "").strip('"')))
    return out


_OWNED = re.compile(r"-F key=autosandbox-(?:learn|trial)-(\d+)(?:-\d+)?$")


def sweep_stale_rules() -> list[str]:
    """Delete rules an autosandbox killed by SIGKILL left loaded (its pid is gone). They cost
    every process and, since the first matching rule wins, would hide our new rules' keys."""
    if shutil.which("auditctl") is None or not in_initial_pid_namespace():
        return []  # a container cannot list the kernel's rules (nor did it load any)
    try:
        listed = commands.run(["auditctl", "-l"]).stdout
    except commands.ToolError as exc:
        log.warning("stale audit rules were not looked for: %s", exc)
        return []
    removed = []
    for line in listed.splitlines():
        m = _OWNED.search(line.strip())
        if m is None or Path(f"/proc/{m.group(1)}").exists():
            continue
        words = line.split()
        if words[:1] == ["-a"]:
            try:
                if delete_rule(words[1:]):
                    removed.append(line.strip())
            except commands.ToolError as exc:
                log.warning("stale audit rule left loaded: %s", exc)
    return removed


def _uid(value: str | None) -> int | None:
    """A uid as `ausearch -i` shows it (a user name, or a number it could not name)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        return None


def parse_ausearch(text: str) -> list[AuditEvent]:
    """Events from `ausearch -i` output (records of one event are separated by ----)."""
    out: list[AuditEvent] = []
    for block in text.split("----"):
        syscall: dict[str, str] = {}
        cwd = "/"
        paths: list[tuple[str, str]] = []
        for line in block.splitlines():
            if line.startswith("type=SYSCALL"):
                syscall = dict(_FIELD.findall(line.split(" : ", 1)[-1]))
            elif line.startswith("type=CWD"):
                cwd = dict(_FIELD.findall(line.split(" : ", 1)[-1])).get("cwd", "/")
            elif line.startswith("type=PATH"):
                f = dict(_FIELD.findall(line.split(" : ", 1)[-1]))
                paths.append((f.get("name", ""), f.get("nametype", "")))
        if not syscall or "pid" not in syscall:
            continue
        errno = syscall.get("exit", "").split("(")[0]
        path = None
        # The object of the call: CREATE/DELETE/NORMAL entries name it; PARENT is its directory.
        for name, _kind in sorted(paths, key=lambda p: p[1] == "PARENT"):
            if name and name not in ("(null)", "?"):
                path = name if name.startswith("/") else os.path.normpath(os.path.join(cwd, name))
                break
        family = None
        if syscall.get("syscall") == "socket":
            family = _FAMILIES.get(syscall.get("a0", ""))
        try:
            pid = int(syscall["pid"])
        except ValueError:
            continue
        out.append(AuditEvent(pid, syscall.get("syscall", "?"), errno, path, family,
                              syscall.get("exe", "").strip('"'), _uid(syscall.get("euid"))))
    return out
