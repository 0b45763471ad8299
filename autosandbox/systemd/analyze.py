"""systemd-analyze without a running systemd: verify a drop-in, score a unit's exposure."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autosandbox import commands, unitfile
from autosandbox.errors import UserError, require_tool
from autosandbox.systemd.manager import looks_like_unit

_SCORE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
CHECK_UNIT = "autosandbox-check.service"  # the copy's name when it has no unit of its own
_OFF = ("", "no", "false", "0", "off")


@dataclass(frozen=True)
class Score:
    exposure: float
    label: str


def _analyze() -> str:
    return require_tool("systemd-analyze", "install the systemd package")


def command_unit(argv: list[str]) -> str:
    """A throw-away unit that runs `argv`, to check a drop-in learned from a plain command."""
    exe = shutil.which(argv[0]) or argv[0]
    return unitfile.join_lines([
        "[Unit]", "Description=autosandbox check unit",
        "[Service]", "ExecStart=" + unitfile.exec_line([exe, *argv[1:]]),
    ])


# Where `apply`'s drop-in (50-autosandbox.conf) sorts among the unit's own drop-ins, in a unit
# text made by systemd.session.unit_text(): systemd applies drop-ins in file name order, so one
# named after ours (override.conf, 60-x.conf) overrides ours, and an applied one is replaced.
SLOT_BEGIN = "# autosandbox: 50-autosandbox.conf applies here"
SLOT_END = "# autosandbox: end of 50-autosandbox.conf"


def merged(unit_text: str, dropin: str | None) -> str:
    """The unit as systemd reads it with `dropin` applied (sections merge when appended)."""
    head, slot, rest = unit_text.partition(SLOT_BEGIN)
    if slot:
        current, end, tail = rest.partition(SLOT_END)
        if end:
            return head + (dropin if dropin is not None else current) + tail
    return unit_text + ("\n" + dropin if dropin else "")


def check_name(unit: str | None) -> str:
    """The copy carries the unit's own name, so every specifier (%i, %I, %n, %p...: `User=%i`
    of a template instance, user@UID.service) resolves as in the real unit; `_ENV` keeps
    systemd-analyze from adding the real unit's drop-ins, already merged into the copy."""
    if unit and looks_like_unit(unit) and unit.endswith(".service") and "@." not in unit:
        return unit
    return CHECK_UNIT


# Only the copy's directory is searched (verify_set_unit_path: an empty SYSTEMD_UNIT_PATH adds
# nothing after it), so its dependencies (sysinit.target...) are not found there: those lines
# say nothing about the unit and are dropped.
_ENV = {**os.environ, "SYSTEMD_UNIT_PATH": ""}
_NO_DEPENDENCY = re.compile(r"^\S+: Failed to create \S+/start: Unit \S+ not found\.$")


def _with_unit(unit_text: str, dropin: str | None, unit: str | None = None,
               ) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    tmp = tempfile.TemporaryDirectory(prefix="autosandbox-analyze-")
    path = Path(tmp.name) / check_name(unit)
    path.write_text(merged(unit_text, dropin), encoding="utf-8")
    return tmp, path


def verify(unit_text: str, dropin: str | None, unit: str | None = None) -> list[str]:
    """Warnings systemd-analyze verify prints about the unit with the drop-in (exit code is 0
    for bad values, so stderr is what counts)."""
    tmp, path = _with_unit(unit_text, dropin, unit)
    with tmp:
        proc = commands.run([_analyze(), "verify", "--man=no", str(path)], check=False,
                            env=_ENV)
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
             if ln.strip() and not _NO_DEPENDENCY.match(ln)]
    return [ln.replace(str(path), path.name) for ln in lines]


# Online, `systemd-analyze security UNIT` counts PrivateMounts= as set (0.2 of exposure) when
# any of these is on, whatever PrivateMounts= itself says; offline it reads only the file.
# Measured with systemd 252 (integration container): each setting alone on a bare unit, and
# the 8 stock services of integration/test_zoo.py with a learned-style drop-in, where the
# printed exposure was 0.2 above the applied unit's before this.
_IMPLY_PRIVATE_MOUNTS: dict[str, tuple[str, ...]] = {  # setting -> values that leave it off
    "ProtectSystem": _OFF, "ProtectHome": _OFF, "PrivateTmp": _OFF, "PrivateDevices": _OFF,
    "ProtectKernelTunables": _OFF, "ProtectKernelModules": _OFF,
    "ProtectControlGroups": _OFF, "DynamicUser": _OFF,
}


def _scored(text: str) -> str:
    """`text` as the running manager scores it: PrivateMounts=yes where it is implied."""
    values: dict[str, str] = {}
    for key, value in unitfile.parse(text):
        values[key] = value.strip().lower()
    if any(values.get(k) and values[k] not in off for k, off in _IMPLY_PRIVATE_MOUNTS.items()):
        return text.rstrip("\n") + "\n[Service]\nPrivateMounts=yes\n"
    return text


def security(unit_text: str, dropin: str | None, unit: str | None = None,
             user: bool = False) -> Score:
    """`user`: scored as a unit of a user's manager (`--user`; offline it only needs some
    $XDG_RUNTIME_DIR, here the copy's own directory)."""
    tmp, path = _with_unit(_scored(merged(unit_text, dropin)), None, unit)
    with tmp:
        scope = ["--user"] if user else []
        env = {**_ENV, "XDG_RUNTIME_DIR": tmp.name} if user else _ENV
        proc = commands.run([_analyze(), "security", *scope, "--offline=yes", "--no-pager",
                             str(path)], check=False, env=env)
    m = _SCORE.search(proc.stdout)
    if m is None:
        raise UserError(f"systemd-analyze security gave no score: {proc.stderr.strip()[:200]}")
    label = proc.stdout[m.end():].strip().split()[0] if proc.stdout[m.end():].strip() else ""
    return Score(float(m.group(1)), label)
