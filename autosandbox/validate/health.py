"""Is the service healthy? State, restarts and main process over a settle window, plus the
user's own checks (command, URL, TCP port) and the workload (--exercise)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from autosandbox import commands
from autosandbox.systemd.manager import Manager


@dataclass
class HealthChecks:
    settle: float = 5.0
    command: str | None = None
    url: str | None = None
    port: str | None = None  # PORT or HOST:PORT
    exercise: str | None = None
    timeout: float = 30.0  # one check at most
    ready: float = 30.0  # how long a started unit may take to pass its checks

    def user_checks(self) -> list[str]:
        return [x for x in (self.command and "health command", self.url and "health URL",
                            self.port and "health port", self.exercise and "exercise") if x]


@dataclass
class Health:
    healthy: bool
    problems: list[str] = field(default_factory=list)
    state: str = ""
    ready_s: float | None = None  # seconds from start until the checks first passed

    def summary(self) -> str:
        return "healthy" if self.healthy else "; ".join(self.problems)


def _run_check(cmd: str, timeout: float, what: str) -> str | None:
    try:  # the user's own command: in the user's locale
        cp = commands.run(["/bin/sh", "-c", cmd], check=False, timeout=timeout,
                          c_locale=False, new_session=True)
    except commands.ToolTimeout:
        return f"{what} timed out after {timeout:.0f}s"
    if cp.returncode != 0:
        tail = (cp.stderr or cp.stdout).strip().splitlines()[-1:] or [""]
        return f"{what} exited {cp.returncode} {tail[0][:120]}".rstrip()
    return None


def _check_url(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status >= 400:
                return f"{url} answered {r.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None


def _check_port(spec: str, timeout: float) -> str | None:
    host, _, port = spec.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return f"TCP {host or '127.0.0.1'}:{port}: {exc}"


def _check_once(kind: str, value: str, checks: HealthChecks) -> str | None:
    if kind in ("command", "exercise"):
        return _run_check(value, checks.timeout, f"{kind} {value!r}")
    if kind == "url":
        return _check_url(value, min(checks.timeout, 10))
    return _check_port(value, min(checks.timeout, 10))


def user_checks(checks: HealthChecks, retry_for: float = 0.0,
                alive: Callable[[], str | None] | None = None) -> list[str]:
    """The user's checks, polled together until all pass or `retry_for` seconds have passed
    (a service is ready some time after systemd calls it active). `alive` says why waiting is
    pointless (the unit died), or None."""
    todo = [(k, v) for k, v in (("command", checks.command), ("url", checks.url),
                                ("port", checks.port), ("exercise", checks.exercise)) if v]
    deadline = time.monotonic() + retry_for
    while True:
        problems = [p for k, v in todo if (p := _check_once(k, v, checks)) is not None]
        if not problems or time.monotonic() >= deadline:
            return problems
        gone = alive() if alive is not None else None
        if gone is not None:
            return [*problems, gone]
        time.sleep(0.5)


def judge(mgr: Manager, unit: str, service_type: str, checks: HealthChecks,
          start_state: str, hold: bool = True) -> Health:
    """Judge a unit just (re)started into `start_state`: ready within checks.ready seconds,
    then (with `hold`) still up, unrestarted, same main process and passing after --settle."""
    problems: list[str] = []
    if service_type == "oneshot":
        info = mgr.unit(unit)
        if str(info.Result) != "success":
            problems.append(f"oneshot result {info.Result}")
        return Health(not problems, problems, start_state)
    if start_state != "active":
        return Health(False, [f"unit is {start_state} after start"], start_state)
    _, _, pid0, restarts0 = mgr.state(unit)

    def alive() -> str | None:
        state, sub, _, _ = mgr.state(unit)
        return None if state in ("active", "reloading") else f"unit became {state}/{sub}"

    begun = time.monotonic()
    problems += user_checks(checks, retry_for=checks.ready, alive=alive)
    if problems:
        return Health(False, problems, mgr.state(unit)[0])
    ready_s = time.monotonic() - begun
    if hold:
        deadline = time.monotonic() + checks.settle
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        problems += user_checks(checks)
    state, sub, pid, restarts = mgr.state(unit)
    if state != "active":
        problems.append(f"unit became {state}/{sub}")
    if restarts > restarts0:
        problems.append(f"unit restarted {restarts - restarts0} times")
    if pid0 and pid != pid0:
        problems.append(f"main process changed ({pid0} -> {pid})")
    return Health(not problems, problems, state, ready_s)
