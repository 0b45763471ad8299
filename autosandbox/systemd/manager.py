"""systemd over D-Bus (pydbus): read a service, reload, restart, wait for its state.

Which manager: the system's, or one user's (`--user -M USER@`). `Scope` is the one place that
knows the difference (bus, unit directories, journal fields, systemctl); the CLI picks it once
per run (use_scope) and every stage asks current_scope()."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from autosandbox import interrupts
from autosandbox.errors import UserError

T = TypeVar("T")
log = logging.getLogger(__name__)
BUS_NAME = "org.freedesktop.systemd1"
BUS_UNIT = "dbus.service"  # the message bus, whichever daemon provides it (Alias=)
RECONNECT_TIMEOUT = 60.0  # a re-executing manager is back on its socket within this
# A unit in one of these states has (or is getting) processes: "running" as found
RUNNING = ("active", "reloading", "activating")
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


@dataclass(frozen=True)
class Scope:
    """A service manager: the system's (uid None) or the one of user `uid` (systemd --user)."""
    uid: int | None = None
    user: str = ""
    gid: int = 0
    home: str = ""

    @property
    def is_user(self) -> bool:
        return self.uid is not None

    @property
    def runtime_dir(self) -> Path:
        """Where runtime drop-ins go (read by the manager, gone at reboot or logout)."""
        if self.uid is None:
            return Path("/run/systemd/system")
        return Path(f"/run/user/{self.uid}/systemd/user")

    @property
    def config_dir(self) -> Path:
        """Where `apply` installs for good (`systemctl edit [--user]` writes there too)."""
        if self.uid is None:
            return Path("/etc/systemd/system")
        return Path(self.home) / ".config" / "systemd" / "user"

    @property
    def private_socket(self) -> Path:
        """The manager's own D-Bus socket: root reaches it with no bus daemon in between."""
        if self.uid is None:
            return Path("/run/systemd/private")
        return Path(f"/run/user/{self.uid}/systemd/private")

    @property
    def who(self) -> str:
        return "systemd" if self.uid is None else f"the service manager of {self.user}"

    def key(self, unit: str) -> str:
        """The name of our own state for `unit` (locks, FIFOs, learned drop-ins): a user's
        units never share it with the system's (no unit name has anything after its type)."""
        return unit if self.uid is None else f"{unit}~user-{self.uid}"

    def flag(self) -> str:
        """How the command line names this manager (for messages: `reset UNIT ...`)."""
        return "" if self.uid is None else f" --user -M {self.user}@"

    def systemctl(self) -> list[str]:
        """systemctl for this manager. A user's: run as that user on its private socket (as
        root, systemctl --user is refused, and -M USER@ needs a user bus the host may lack)."""
        if self.uid is None:
            return ["systemctl"]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                "env", f"XDG_RUNTIME_DIR=/run/user/{self.uid}", "systemctl", "--user"]

    def journal_match(self, unit: str) -> list[str]:
        """journalctl arguments for the unit's own lines."""
        if self.uid is None:
            return ["-u", unit]
        return [f"_UID={self.uid}", f"_SYSTEMD_USER_UNIT={unit}"]


SYSTEM = Scope()
_scope: list[Scope] = [SYSTEM]


def current_scope() -> Scope:
    return _scope[-1]


def use_scope(scope: Scope) -> None:
    """The manager this run works on (set once by the CLI, before anything else)."""
    _scope[:] = [scope]


def user_scope(spec: str) -> Scope:
    """The manager of the user `-M USER@` names (a name or a uid; USER@.host too)."""
    name, at, host = spec.partition("@")
    if not at or host not in ("", ".host") or not name:
        raise UserError(f"-M {spec}: give the user as USER@ (another machine is not "
                        "supported)")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise UserError(f"no such user: {name}") from None
    if pw.pw_uid == 0:
        raise UserError("root's user manager is not supported: learn a system service")
    return Scope(pw.pw_uid, pw.pw_name, pw.pw_gid, pw.pw_dir)


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

    @property
    def privileged(self) -> bool:
        """A `+` line: it runs outside the sandbox, so what it does is never the profile's."""
        return "privileged" in self.flags


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
    root_directory: str = ""
    root_image: str = ""
    triggered_by: tuple[str, ...] = ()  # sockets, timers, paths that start it

    @property
    def running(self) -> bool:
        return self.active_state in RUNNING


def check_unit_name(name: str) -> None:
    scope = current_scope()
    if scope.is_user and name.endswith(".service") and name.startswith("user@"):
        raise UserError(f"{name} is a user manager itself: it is not a unit of "
                        f"{scope.user}'s manager; learn it as a system service (without --user)")
    if not name.endswith(".service"):
        raise UserError(f"{name} is not a service: autosandbox learns .service units (and the "
                        "services a .socket or .timer starts)")
    if "@." in name:
        raise UserError(f"{name} is a template: name an instance, e.g. "
                        f"{name.replace('@.', '@example.')} (--template writes for all)")
    if not _SERVICE.match(name):
        raise UserError(f"{name!r} is not a valid unit name")


def check_learnable_name(name: str) -> None:
    """`learn` takes a service, or the .socket or .timer that starts one (of a user's
    manager: a service only)."""
    if current_scope().is_user and not name.endswith(".service") and _ANY_UNIT.match(name):
        raise UserError(f"{name} is not a service: of a user's manager autosandbox learns "
                        ".service units only; nothing was done")
    if name.endswith((".socket", ".timer")) and _ANY_UNIT.match(name) and "@." not in name:
        return
    if name.endswith("@.service") and _SERVICE.match(name):
        return  # a template: learn_target takes it when an Accept=yes socket starts it
    check_unit_name(name)


def template_of(name: str) -> str:
    """foo@bar.service -> foo@.service: where drop-ins for every instance go."""
    prefix, at, rest = name.partition("@")
    if not at or not rest.endswith(".service") or rest == ".service":
        raise UserError(f"{name} is not an instance of a template (NAME@INSTANCE.service): "
                        "--template needs one")
    return f"{prefix}@.service"


class Manager:
    """A thin, typed face of org.freedesktop.systemd1.Manager and its units."""

    def __init__(self) -> None:
        self.scope = current_scope()
        try:
            from pydbus import SystemBus
        except ImportError as exc:  # PyGObject missing: say how to get it
            raise UserError(f"pydbus is not usable ({exc}); run install.sh") from None
        # Not through the system bus when root: a restart of dbus.service (anyone's, during a
        # learn) closed that connection, and the unit was left with our trace drop-in loaded,
        # the reload that would have removed it refused. The manager's own socket closes only
        # when it re-executes (a package upgrade): then _call reconnects.
        self.private = self.scope.is_user or (os.geteuid() == 0
                                              and self.scope.private_socket.exists())
        if self.private:
            self.bus = _private_bus(self.scope)
        else:
            try:
                self.bus = SystemBus()
            except Exception as exc:
                raise UserError(f"cannot reach systemd over D-Bus ({_short(exc)}): is systemd "
                                "running as PID 1?") from None
        try:
            self.mgr = _get(self.bus)
            self.version = str(self.mgr.Version)
        except Exception as exc:
            raise UserError(f"cannot reach systemd over D-Bus ({_short(exc)}): is systemd "
                            "running as PID 1?") from None
        # Units whose processes we restarted, started or stopped: a restore restarts only
        # these (Ctrl-C while tracers start must not restart a production service).
        self.changed: set[str] = set()

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """A D-Bus call whose failure (GLib.Error) is one line for the user, not a traceback;
        once more on a new connection if the manager's socket closed under it (daemon-reexec:
        `call` looks its proxies up again)."""
        try:
            return call()
        except Exception as exc:
            if not self._reconnected():
                if isinstance(exc, UserError):
                    raise
                raise UserError(f"systemd refused to {what}: {_short(exc)}") from None
        return _dbus(what, call)

    def _closed(self) -> bool:
        """Our private connection to the manager closed (daemon-reexec): _call reconnects."""
        return self.private and bool(self.bus.con.is_closed())

    def _reconnected(self) -> bool:
        """After the manager re-executed, a new connection to it (it is back within seconds)."""
        if not self._closed():
            return False
        log.debug("%s closed the connection (re-executed?): reconnecting", self.scope.who)
        shared = _BUSES.get(self.scope.uid)
        if shared is None or shared.con.is_closed():  # else another Manager reconnected
            _BUSES.pop(self.scope.uid, None)
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            try:
                self.bus = _private_bus(self.scope)
                self.mgr = _get(self.bus)
                return True
            except Exception:
                _BUSES.pop(self.scope.uid, None)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def unit(self, name: str) -> Any:
        return self._call(f"load {name}", lambda: self._unit(name))

    def _unit(self, name: str) -> Any:
        try:
            path = self.mgr.LoadUnit(name)
            return _get(self.bus, path)
        except Exception as exc:
            if self._closed():
                raise  # _call reconnects
            raise UserError(f"cannot load {name}: {_short(exc)}") from None

    def info(self, name: str) -> ServiceInfo:
        def read() -> ServiceInfo:
            try:
                return self._info(name)
            except UserError:
                raise
            except Exception as exc:  # GLib.Error: a unit file systemd cannot put on D-Bus
                if self._closed():
                    raise  # _call reconnects
                raise UserError(f"cannot read {name} from systemd ({_short(exc)}): check it "
                                f"with systemctl cat {name}") from None
        return self._call(f"read {name}", read)

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
            root_directory=str(getattr(u, "RootDirectory", "") or ""),
            root_image=str(getattr(u, "RootImage", "") or ""),
            triggered_by=tuple(str(t) for t in getattr(u, "TriggeredBy", ()) or ()),
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

    def triggers(self, name: str) -> tuple[str, ...]:
        """The units a .socket, .timer or .path starts (its Triggers=)."""
        u = self.unit(name)
        if u.LoadState != "loaded":
            what = "does not exist" if u.LoadState == "not-found" else f"is {u.LoadState}"
            raise UserError(f"unit {name} {what}")
        return self._call(f"read what {name} starts",
                          lambda: tuple(str(t) for t in self._unit(name).Triggers))

    def accepts(self, socket: str) -> bool:
        """Accept=yes: one service instance per connection."""
        return self._call(f"read {socket}",
                          lambda: bool(getattr(self._unit(socket), "Accept", False)))

    def state(self, name: str) -> tuple[str, str, int, int]:
        def read() -> tuple[str, str, int, int]:
            u = self._unit(name)
            return (str(u.ActiveState), str(u.SubState), int(u.MainPID),
                    int(getattr(u, "NRestarts", 0)))
        return self._call(f"read the state of {name}", read)

    def invocation(self, name: str) -> str:
        """The unit's current run (a new one each time it starts; empty when it never ran)."""
        return self._call(f"read the state of {name}",
                          lambda: bytes(self._unit(name).InvocationID).hex())

    def reload(self) -> None:
        began = time.monotonic()
        log.debug("systemd: daemon-reload")
        self._call("reload systemd", lambda: self.mgr.Reload())
        log.debug("  daemon-reload: done in %.2f s", time.monotonic() - began)

    def restart(self, name: str, timeout: float = 120.0) -> str:
        return self._job("restart", name, lambda: self.mgr.RestartUnit(name, "replace"), timeout)

    def start(self, name: str, timeout: float = 120.0) -> str:
        return self._job("start", name, lambda: self.mgr.StartUnit(name, "replace"), timeout)

    def stop(self, name: str, timeout: float = 120.0) -> str:
        return self._job("stop", name, lambda: self.mgr.StopUnit(name, "replace"), timeout)

    def _job(self, verb: str, name: str, call: Callable[[], object], timeout: float) -> str:
        """Queue a job on `name` and wait (at most `timeout` s) until it is done."""
        self._changing(name)
        began = time.monotonic()
        log.debug("systemd: %s %s", verb, name)
        # a job call cut by a re-exec is sent again: at worst a second restart, never none
        self._call(f"{verb} {name}", call)
        state = self.wait(name, timeout)
        log.debug("  %s %s: %s after %.2f s", verb, name, state, time.monotonic() - began)
        return state

    def _changing(self, name: str) -> None:
        if name not in self.changed:
            from autosandbox.systemd import runstate  # runstate's undo comes before ours

            # before the job, with the state it was found in: `reset` after a kill brings it
            # back to that, even from a moment we had it stopped (a restart between trials)
            try:
                found: bool | None = str(self.unit(name).ActiveState) in RUNNING
            except Exception:  # not loadable by itself (a bare template): reset goes by state
                found = None
            entry = {"was_running": found} if found is not None else {}
            runstate.record("changed", unit=name, **entry)
            self.changed.add(name)

    def control_group(self, name: str, fallback: str = "") -> str:
        """The unit's cgroup now (a stopped unit keeps it while processes are left in it)."""
        with contextlib.suppress(Exception):
            group = str(self.unit(name).ControlGroup or "")
            if group:
                return group
        return fallback or (f"/system.slice/{name}" if not self.scope.is_user else "")

    def refuse_bus(self, name: str) -> None:
        """Refuse the manager's message bus (dbus-daemon, or dbus-broker by its alias), before
        anything is changed: every restart of ours would cut every service off the bus."""
        try:
            bus = self.unit(BUS_UNIT)
            if str(bus.LoadState) != "loaded" or str(self.unit(name).Id) not in {
                    str(bus.Id), *(str(n) for n in bus.Names)}:
                return
        except Exception:  # GLib.Error, UserError: not loadable, so not the running bus
            return
        raise UserError(f"{name} is the D-Bus message bus: restarting it (learning does once, "
                        "validation on every trial, apply once) disconnects every service on "
                        "the bus; autosandbox leaves it alone; nothing was changed")

    def cgroup_root(self) -> str:
        """The manager's own control group (a user's manager runs in user@UID.service)."""
        if not self.scope.is_user:
            return ""
        return self._call("read the manager's control group",
                          lambda: str(self.mgr.ControlGroup or "")).rstrip("/")

    def reset_failed(self, name: str) -> None:
        with contextlib.suppress(Exception):  # not failed: nothing to reset
            self._call(f"reset {name}", lambda: self.mgr.ResetFailedUnit(name))

    def wait(self, name: str, timeout: float) -> str:
        """Wait until the unit has no job queued and is not in a transition."""
        deadline = time.monotonic() + timeout
        u = self.unit(name)

        # its own reconnection, not _call's: that would load the unit again at every poll
        def read() -> tuple[Any, str]:
            nonlocal u
            try:
                return u.Job, str(u.ActiveState)
            except Exception:
                if not self._reconnected():
                    raise
                u = self._unit(name)
                return u.Job, str(u.ActiveState)
        while True:
            job, state = _dbus(f"read the state of {name}", read)
            if (not job or int(job[0]) == 0) and state not in ("activating", "deactivating",
                                                               "reloading"):
                return str(state)
            if time.monotonic() > deadline:
                return str(state)
            time.sleep(0.1)


_BUSES: dict[int | None, Any] = {}
_PINGS = 10


def _private_bus(scope: Scope) -> Any:
    """A manager's own socket (root may connect; a user's manager lets in root and the user):
    a private connection, no bus daemon, so no user bus (dbus-user-session) is needed and the
    system bus may restart under us. One per process and manager."""
    if scope.uid not in _BUSES:
        _BUSES[scope.uid] = _connect_private(scope)
    return _BUSES[scope.uid]


def _connect_private(scope: Scope) -> Any:
    sock = scope.private_socket
    if not sock.exists() and not scope.is_user:
        raise UserError(f"{sock} is missing: is systemd running as PID 1?")
    if not sock.exists():
        raise UserError(f"{scope.user} has no running service manager ({sock} is missing): "
                        f"'loginctl enable-linger {scope.user}' keeps one running")
    try:
        from gi.repository import Gio
        from pydbus.bus import Bus

        con = Gio.DBusConnection.new_for_address_sync(
            f"unix:path={sock}", Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT, None, None)
        # A first message sent right after the handshake went unanswered at times (systemd
        # 252, about one connection in five): the next one gets both read. Ping until one
        # is answered, so no call of ours waits for ever.
        for _ in range(_PINGS):
            try:
                con.call_sync(BUS_NAME, "/org/freedesktop/systemd1", "org.freedesktop.DBus.Peer",
                              "Ping", None, None, Gio.DBusCallFlags.NONE, 1000, None)
                break
            except Exception as exc:  # GLib.Error: timed out
                log.debug("%s: ping unanswered (%s)", scope.who, _short(exc))
        else:
            raise UserError(f"{scope.who} does not answer on {sock}")
        return Bus(con)
    except UserError:
        raise
    except Exception as exc:
        need = "root" if scope.is_user else "systemd as PID 1, and root"
        raise UserError(f"cannot reach {scope.who} on {sock} ({_short(exc)}): this needs "
                        f"{need}") from None


def _get(bus: Any, path: str | None = None) -> Any:
    """A proxy of the manager or of one of its objects (pydbus reads and parses the object's
    interface: a signal that lands in the parse stays a signal, interrupts.unmasked)."""
    with interrupts.unmasked():
        return bus.get(BUS_NAME, path)


def _dbus(what: str, call: Callable[[], T]) -> T:
    """A D-Bus call whose failure (GLib.Error) is one line for the user, not a traceback."""
    try:
        return call()
    except Exception as exc:
        raise UserError(f"systemd refused to {what}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
