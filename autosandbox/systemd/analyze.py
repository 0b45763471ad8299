"""systemd-analyze without a running systemd: verify a drop-in, score a unit's exposure."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autosandbox import unitfile
from autosandbox.errors import UserError, require_tool

_SCORE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
CHECK_UNIT = "autosandbox-check.service"


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


def _with_unit(unit_text: str, dropin: str | None) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    tmp = tempfile.TemporaryDirectory(prefix="autosandbox-analyze-")
    path = Path(tmp.name) / CHECK_UNIT
    # Appending the drop-in to the unit is what systemd does with a drop-in: sections merge.
    path.write_text(unit_text + ("\n" + dropin if dropin else ""), encoding="utf-8")
    return tmp, path


def verify(unit_text: str, dropin: str | None) -> list[str]:
    """Warnings systemd-analyze verify prints about the unit with the drop-in (exit code is 0
    for bad values, so stderr is what counts)."""
    tmp, path = _with_unit(unit_text, dropin)
    with tmp:
        proc = subprocess.run([_analyze(), "verify", "--man=no", str(path)],
                              capture_output=True, text=True, check=False)
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return [ln.replace(str(path), CHECK_UNIT) for ln in lines]


def security(unit_text: str, dropin: str | None) -> Score:
    tmp, path = _with_unit(unit_text, dropin)
    with tmp:
        proc = subprocess.run([_analyze(), "security", "--offline=yes", "--no-pager",
                               str(path)], capture_output=True, text=True, check=False)
    m = _SCORE.search(proc.stdout)
    if m is None:
        raise UserError(f"systemd-analyze security gave no score: {proc.stderr.strip()[:200]}")
    label = proc.stdout[m.end():].strip().split()[0] if proc.stdout[m.end():].strip() else ""
    return Score(float(m.group(1)), label)
