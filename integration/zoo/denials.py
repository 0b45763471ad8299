"""Denials a sandbox may cause, from the unit's journal, the service's own log files and
(in a VM) audit, collected over a window. What the stock unit already logs in the same
steps is the baseline: only what is new under the sandbox counts."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import subprocess
import time
from pathlib import Path

# Words a refused operation leaves in a log line (errno texts and names, seccomp kills).
DENIAL = re.compile(
    r"permission denied|operation not permitted|read-only file system|"
    r"address family not supported|bad system call|function not implemented|"
    r"protocol not supported|\bE(ACCES|PERM|ROFS|AFNOSUPPORT|NOSYS)\b|status=31/SYS|"
    r"not owned by|must be owned|must not be owned|cannot open|can't open|unable to open|"
    r"failed to open|could not open|could not create|cannot create|unable to write",
    re.I)
# Numbers (pids, times, addresses) vary from run to run; a line is compared without them.
_NUMBERS = re.compile(r"0x[0-9a-f]+|\d+", re.I)
AUDIT_ERRORS = ("EACCES", "EPERM", "EROFS")


def _normal(line: str) -> str:
    return _NUMBERS.sub("N", line)


def _cursor() -> str:
    cp = subprocess.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"],
                        capture_output=True, text=True, check=False)
    m = re.search(r"^-- cursor: (.+)$", cp.stdout, re.M)
    return m.group(1) if m else ""


class Window:
    """Start a window: journal cursor, log file sizes, audit start time."""

    def __init__(self, unit: str, logs: list[str]) -> None:
        self.unit = unit
        self.logs = logs
        self.cursor = _cursor()
        self.sizes = {p: os.path.getsize(p) for g in logs for p in glob.glob(g)}
        self.started = time.time()

    def journal(self) -> list[str]:
        cmd = ["journalctl", "--no-pager", "-o", "short-unix", "-u", self.unit]
        cmd += [f"--after-cursor={self.cursor}"] if self.cursor else ["--since",
                                                                      f"@{self.started:.0f}"]
        cp = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return [ln for ln in cp.stdout.splitlines() if not ln.startswith("-- ")]

    def log_lines(self) -> list[str]:
        out = []
        for g in self.logs:
            for p in sorted(glob.glob(g)):
                try:
                    with open(p, "rb") as f:
                        f.seek(self.sizes.get(p, 0))
                        text = f.read().decode("utf-8", "replace")
                except OSError as exc:
                    out.append(f"{p}: cannot read: {exc}")
                    continue
                out += [f"{p}: {ln}" for ln in text.splitlines()]
        return out

    def denials(self) -> list[str]:
        """Lines of the journal and the log files that look like a refused operation."""
        lines = [ln.split(" ", 1)[-1] for ln in self.journal()] + self.log_lines()
        return [ln for ln in lines if DENIAL.search(ln)]


def new_denials(found: list[str], baseline: list[str]) -> list[str]:
    known = {_normal(ln) for ln in baseline}
    return [ln for ln in found if _normal(ln) not in known]


# ----------------------------------------------------------------------------- audit (VM)
AUDIT_KEY = "zoo-denied"


def audit_usable() -> bool:
    return (not os.path.exists("/run/systemd/container")
            and subprocess.run(["auditctl", "-s"], capture_output=True,
                               check=False).returncode == 0)


def audit_start() -> None:
    """Record every failed call with a refusal errno, machine-wide; filtered by exe later."""
    for err in AUDIT_ERRORS:
        subprocess.run(["auditctl", "-a", "always,exit", "-F", "arch=b64", "-S", "all",
                        "-F", f"exit=-{err}", "-k", AUDIT_KEY], check=True,
                       capture_output=True)


def audit_stop() -> None:
    for err in AUDIT_ERRORS:
        subprocess.run(["auditctl", "-d", "always,exit", "-F", "arch=b64", "-S", "all",
                        "-F", f"exit=-{err}", "-k", AUDIT_KEY], check=False,
                       capture_output=True)


def audit_denials(since: float, exes: set[str], seen: list[int] | None = None) -> list[str]:
    """One line per failed call by one of `exes` since `since`: exe syscall exit path.
    `seen` gets the number of records of any program (proof that the rules worked)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(since))
    day = time.strftime("%x", time.localtime(since))
    # --input-logs: without it ausearch reads stdin whenever stdin is not a terminal (under
    # ssh, in CI), and found nothing at all there
    cp = subprocess.run(["ausearch", "--input-logs", "-i", "-k", AUDIT_KEY, "-ts", day, stamp],
                        capture_output=True, text=True, check=False)
    out = []
    for event in cp.stdout.split("----"):
        sc = re.search(r"type=SYSCALL .*", event)
        if not sc:
            continue
        if seen is not None:
            seen.append(1)
        fields = dict(re.findall(r"\b(exe|syscall|exit|comm)=(\S+)", sc.group(0)))
        if fields.get("exe", "").strip('"') not in exes:
            continue
        names = re.findall(r"type=PATH .*?\bname=(\S+)", event)
        out.append(f"audit: {fields.get('exe')} {fields.get('syscall')} "
                   f"{fields.get('exit', '').split('(')[0]} {' '.join(names)}".rstrip())
    return sorted(set(out))


def unit_exes(unit: str) -> set[str]:
    """Executables of the processes now in the unit's cgroup."""
    cp = subprocess.run(["systemctl", "show", "-p", "ControlGroup", "--value", unit],
                        capture_output=True, text=True, check=False)
    cg = cp.stdout.strip()
    out: set[str] = set()
    if not cg:
        return out
    # the unit's own cgroup.procs and those of its sub-cgroups (glob ** matches none too)
    for procs in glob.glob(f"/sys/fs/cgroup{cg}/**/cgroup.procs", recursive=True):
        try:
            pids = Path(procs).read_text().split()
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(OSError):
                out.add(os.readlink(f"/proc/{pid}/exe"))
    return out
