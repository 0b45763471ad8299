"""Per-connection services (a socket with Accept=yes starts one instance of NAME@.service per
connection): which template a name leads to, which processes are instances of it, and how
the instances a trial started ended (the journal: a finished instance is gone from systemd).

Nothing here restarts anything: the socket keeps listening and live instances keep serving."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from autosandbox import commands
from autosandbox.errors import UserError
from autosandbox.systemd.cgroup import cgroup_pids, roots
from autosandbox.systemd.manager import Manager, ServiceInfo, check_unit_name

# systemd's catalogue (sd-messages.h): a job done (`Started X`), a unit that ended cleanly
# (`X: Deactivated successfully`) and one that failed (`X: Failed with result 'R'`).
MSG_STARTED = "39f53479d3a045ac8e11786248231fbf"
MSG_SUCCESS = "7ad2d189f7e94e70a38c781354912448"
MSG_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"
# The instance whose settings stand for the template's (systemd loads no bare template).
PROBE_INSTANCE = "autosandbox-probe"


def is_template(name: str) -> bool:
    return name.endswith("@.service") and len(name) > len("@.service")


def prefix_of(name: str) -> str:
    """as-echo@.service or as-echo@3-a-b.service -> as-echo"""
    return name.partition("@")[0]


def accepting_socket(mgr: Manager, name: str) -> str | None:
    """The Accept=yes socket that starts instances of `name`'s template (a template or an
    instance), or None. Such a socket cannot name its service (Service= is refused with
    Accept=yes): it is always PREFIX.socket."""
    if "@" not in name:
        return None
    sock = f"{prefix_of(name)}.socket"
    try:
        if mgr.unit(sock).LoadState != "loaded" or not mgr.accepts(sock):
            return None
    except UserError:
        return None
    if mgr.scope.is_user:
        # instances are found by PID 1's journal records and the system's slices
        raise UserError(f"{name} is started per connection by {sock} (Accept=yes) of "
                        f"{mgr.scope.user}'s manager: a user's per-connection services are "
                        "not supported; nothing was done")
    return sock


def template_socket(mgr: Manager, name: str) -> str | None:
    """For a template NAME@.service: the Accept=yes socket that starts it (apply, revert,
    diff and validate take such a template by name); another template is refused in one
    line; None for anything else."""
    if not is_template(name):
        return None
    sock = accepting_socket(mgr, name)
    if sock is None:
        check_unit_name(name)  # the one-line refusal of a template
    return sock


def accepted(mgr: Manager, socket: str) -> int:
    """Connections the socket accepted so far (each started an instance)."""
    try:
        return int(getattr(mgr.unit(socket), "NAccepted", 0))
    except (UserError, ValueError, TypeError):
        return 0


def template_info(mgr: Manager, template: str) -> ServiceInfo:
    """The template's settings, read from an instance that is loaded, never started (systemd
    refuses to load a bare template); named as the template."""
    if not is_template(template):
        raise UserError(f"{template} is not a template (NAME@.service)")
    probe = f"{prefix_of(template)}@{PROBE_INSTANCE}.service"
    info = mgr.info(probe)
    info = replace(info, name=template, control_group="", main_pid=0,
                   exec_lines=list(info.exec_lines))
    for path in (info.fragment_path, *info.dropin_paths):
        with contextlib.suppress(OSError):
            for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
                if re.match(r"\s*Exec\w*\s*=.*%", line):
                    # a line with %i would be written with the probe's instance name
                    raise UserError(f"{template}'s Exec lines use specifiers ({path}: "
                                    f"{line.strip()[:80]}): learning such a per-connection "
                                    "template is not supported; nothing was changed")
    return info


def slice_of(mgr: Manager, template: str) -> str:
    """The control group of the slice the template's instances run in (by default
    system-PREFIX.slice below system.slice)."""
    probe = f"{prefix_of(template)}@{PROBE_INSTANCE}.service"
    slice_name = str(getattr(mgr.unit(probe), "Slice", "") or "system.slice")
    return slice_path(slice_name)


def slice_path(slice_name: str) -> str:
    """The control group of a slice ("a-b.slice" nests in a.slice; "-.slice" is the root)."""
    if not slice_name or slice_name == "-.slice":
        return ""
    parts = slice_name.removesuffix(".slice").split("-")
    return "".join("/" + "-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))


@dataclass(frozen=True)
class Instances:
    """Which control groups are instances of one template started in our window: directly
    below the instances' slice, named PREFIX@INSTANCE.service, and not among those that ran
    before our drop-in was loaded (`before`: not traced, not counted, not believed)."""
    slice: str  # /system.slice/system-as\x2decho.slice
    prefix: str  # as-echo
    before: frozenset[str] = field(default_factory=frozenset)

    def unit_cgroup(self, cgroup: str | None) -> str | None:
        """The instance's own control group for a process's `cgroup` (it or a child of
        it), if that is an instance of ours; else None."""
        if cgroup is None or not cgroup.startswith(self.slice + "/"):
            return None
        name = cgroup[len(self.slice) + 1:].split("/", 1)[0]
        inst = name.removeprefix(f"{self.prefix}@").removesuffix(".service")
        if not name.startswith(f"{self.prefix}@") or not name.endswith(".service") or not inst:
            return None
        own = f"{self.slice}/{name}"
        return None if own in self.before else own


def running_instances(slice_cgroup: str, prefix: str) -> frozenset[str]:
    """Control groups of the template's instances that exist now (cgroup v2 or v1's
    name=systemd hierarchy)."""
    out: set[str] = set()
    for root in roots():
        d = root / slice_cgroup.lstrip("/")
        with contextlib.suppress(OSError):
            out |= {f"{slice_cgroup}/{p.name}" for p in d.iterdir()
                    if p.is_dir() and p.name.startswith(f"{prefix}@")
                    and p.name.endswith(".service")}
    return frozenset(out)


def cgroup_gone(cgroup: str) -> bool:
    """No process is left in the control group (or it was removed)."""
    return not cgroup_pids(cgroup)


@dataclass
class Outcomes:
    """What the journal says about the instances started after a cursor."""
    started: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)  # unit -> success | failed (RESULT)

    def unfinished(self) -> list[str]:
        return [u for u in self.started if u not in self.ended]

    def failed(self) -> list[str]:
        return [f"{u} ({self.ended[u]})" for u in self.started
                if u in self.ended and self.ended[u] != "success"]


def parse_outcomes(lines: list[str], prefix: str) -> Outcomes:
    """`journalctl -o json` lines of PID 1 -> the instances of PREFIX@.service they started
    and how each ended."""
    out = Outcomes()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        unit = rec.get("UNIT")
        if not isinstance(unit, str) or not unit.startswith(f"{prefix}@") or \
                not unit.endswith(".service") or is_template(unit):
            continue
        msg = rec.get("MESSAGE_ID")
        if msg == MSG_STARTED and rec.get("JOB_TYPE") == "start" and \
                rec.get("JOB_RESULT") == "done" and unit not in out.started:
            out.started.append(unit)
        elif msg == MSG_SUCCESS and unit in out.started:
            out.ended[unit] = "success"
        elif msg == MSG_FAILED and unit in out.started:
            out.ended[unit] = f"failed: {rec.get('UNIT_RESULT') or 'failure'}"
    return out


def outcomes(prefix: str, cursor: str | None) -> Outcomes:
    """The instances started after `cursor` (journald's records of PID 1)."""
    with contextlib.suppress(commands.ToolTimeout):
        commands.run(["journalctl", "--sync"], check=False, timeout=30)
    args = ["journalctl", "_PID=1", "-o", "json", "--no-pager", "-q",
            "--output-fields=UNIT,MESSAGE_ID,JOB_TYPE,JOB_RESULT,UNIT_RESULT"]
    args += [f"--after-cursor={cursor}"] if cursor else ["-n", "0"]
    return parse_outcomes(commands.run(args, check=False).stdout.splitlines(), prefix)
