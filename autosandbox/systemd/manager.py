"""systemd over D-Bus (pydbus): read a service, reload, restart, wait for its state."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from autosandbox.errors import UserError

T = TypeVar("T")
BUS_NAME = "org.freedesktop.systemd1"
EXEC_KINDS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop",
              "ExecStopPost")
# ExecStartEx flags -> the command-line prefix systemd.service(5) documents for them.
FLAG_PREFIX = {"ignore-failure": "-", "privileged": "+", "no-setuid": "!", "ambient": "!!",
               "no-env-expand": ":"}
# Unit names (systemd.unit(5)): `looks_like_unit` tells `learn NAME` from `learn CMD`; only a
# service instance passes check_unit_name.
_NAME = r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?"
_UNIT_TYPES = ("service", "socket", "timer", "target", "mount", "path", "slice", "scope",
               "device", "swap", "automount")
_ANY_UNIT = re.compile(rf"^{_NAME}\.({'|'.join(_UNIT_TYPES)})$")
_SERVICE = re.compile(rf"^{_NAME}\.service$")


def looks_like_unit(name: str) -> bool:
    return _ANY_UNIT.match(name) is not None


@dataclass(frozen=True)
class ExecLine:
    kind: str  # ExecStart, ExecStartPre, ...
    path: str
    argv: tuple[str, ...]
    flags: tuple[str, ...]

    def prefix(self) -> str:
        return "".join(FLAG_PREFIX[f] for f in self.flags if f in FLAG_PREFIX)


@dataclass
class ServiceInfo:
    name: str
    load_state: str
    active_state: str
    sub_state: str
    type: str
    user: str
    group: str
    dynamic_user: bool
    working_directory: str
    fragment_path: str
    dropin_paths: list[str]
    control_group: str
    main_pid: int
    n_restarts: int
    exec_lines: list[ExecLine] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "reloading", "activating")


def check_unit_name(name: str) -> None:
    if not name.endswith(".service"):
        raise UserError(f"{name} is not a service: autosandbox learns .service units")
    if "@." in name:
        raise UserError(f"{name} is a template: name an instance, e.g. "
                        f"{name.replace('@.', '@example.')}")
    if not _SERVICE.match(name):
        raise UserError(f"{name!r} is not a valid unit name")


class Manager:
    """A thin, typed face of org.freedesktop.systemd1.Manager and its units."""

    def __init__(self) -> None:
        try:
            from pydbus import SystemBus
        except ImportError as exc:  # PyGObject missing: say how to get it
            raise UserError(f"pydbus is not usable ({exc}); run install.sh") from None
        try:
            self.bus = SystemBus()
            self.mgr = self.bus.get(BUS_NAME)
            self.version = str(self.mgr.Version)
        except Exception as exc:
            raise UserError(f"cannot reach systemd over D-Bus ({_short(exc)}): is systemd "
                            "running as PID 1?") from None

    def unit(self, name: str) -> Any:
        try:
            path = self.mgr.LoadUnit(name)
            return self.bus.get(BUS_NAME, path)
        except Exception as exc:
            raise UserError(f"cannot load {name}: {_short(exc)}") from None

    def info(self, name: str) -> ServiceInfo:
        try:
            return self._info(name)
        except UserError:
            raise
        except Exception as exc:  # GLib.Error: e.g. a unit file systemd cannot put on D-Bus
            raise UserError(f"cannot read {name} from systemd ({_short(exc)}): check it "
                            f"with systemctl cat {name}") from None

    def _info(self, name: str) -> ServiceInfo:
        u = self.unit(name)
        if u.LoadState != "loaded":
            what = "does not exist" if u.LoadState == "not-found" else f"is {u.LoadState}"
            raise UserError(f"unit {name} {what}")
        info = ServiceInfo(
            name=name, load_state=u.LoadState, active_state=u.ActiveState,
            sub_state=u.SubState, type=u.Type, user=u.User, group=u.Group,
            dynamic_user=bool(u.DynamicUser), working_directory=u.WorkingDirectory,
            fragment_path=u.FragmentPath, dropin_paths=list(u.DropInPaths),
            control_group=u.ControlGroup, main_pid=int(u.MainPID),
            n_restarts=int(getattr(u, "NRestarts", 0)),
        )
        for kind in EXEC_KINDS:
            try:
                lines = getattr(u, kind + "Ex")
                for path, argv, flags, *_ in lines:
                    info.exec_lines.append(ExecLine(kind, path, tuple(argv), tuple(flags)))
            except AttributeError:  # systemd < 243: no ExecXxxEx, only ignore-failure
                for path, argv, ignore, *_ in getattr(u, kind):
                    flags = ("ignore-failure",) if ignore else ()
                    info.exec_lines.append(ExecLine(kind, path, tuple(argv), flags))
        return info

    def state(self, name: str) -> tuple[str, str, int, int]:
        u = self.unit(name)
        return _dbus(f"read the state of {name}", lambda: (
            str(u.ActiveState), str(u.SubState), int(u.MainPID),
            int(getattr(u, "NRestarts", 0))))

    def reload(self) -> None:
        _dbus("reload systemd", self.mgr.Reload)

    def restart(self, name: str, timeout: float = 120.0) -> str:
        _dbus(f"restart {name}", lambda: self.mgr.RestartUnit(name, "replace"))
        return self.wait(name, timeout)

    def start(self, name: str, timeout: float = 120.0) -> str:
        _dbus(f"start {name}", lambda: self.mgr.StartUnit(name, "replace"))
        return self.wait(name, timeout)

    def stop(self, name: str, timeout: float = 120.0) -> str:
        _dbus(f"stop {name}", lambda: self.mgr.StopUnit(name, "replace"))
        return self.wait(name, timeout)

    def reset_failed(self, name: str) -> None:
        with contextlib.suppress(Exception):  # not failed: nothing to reset
            self.mgr.ResetFailedUnit(name)

    def wait(self, name: str, timeout: float) -> str:
        """Wait until the unit has no job queued and is not in a transition."""
        deadline = time.monotonic() + timeout
        u = self.unit(name)
        while True:
            job, state = _dbus(f"read the state of {name}", lambda: (u.Job, u.ActiveState))
            if (not job or int(job[0]) == 0) and state not in ("activating", "deactivating",
                                                               "reloading"):
                return str(state)
            if time.monotonic() > deadline:
                return str(state)
            time.sleep(0.1)


def _dbus(what: str, call: Callable[[], T]) -> T:
    """A D-Bus call whose failure (GLib.Error) is one line for the user, not a traceback."""
    try:
        return call()
    except Exception as exc:
        raise UserError(f"systemd refused to {what}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
