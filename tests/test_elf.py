"""ELF reading (linux/elf.py) on this host's own binaries: the imported functions are those
`nm -D --undefined-only` lists, and a session opener is told from an authenticator."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autosandbox.linux.elf import imported_functions, is_elf32, opens_sessions

SESSION_OPENERS = [p for p in ("/usr/bin/login", "/usr/bin/su", "/usr/sbin/runuser")
                   if Path(p).is_file()]
OTHERS = [p for p in ("/usr/bin/true", "/usr/bin/strace", sys.executable) if Path(p).is_file()]


def _nm(path: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("nm") is None, reason="no nm (binutils) here")
@pytest.mark.parametrize("path", SESSION_OPENERS + OTHERS)
def test_imports_are_what_nm_says(path: str) -> None:
    real = str(Path(path).resolve())
    assert imported_functions(real) == frozenset(_nm(real))


@pytest.mark.skipif(not SESSION_OPENERS, reason="no login, su or runuser here")
def test_session_openers_and_others() -> None:
    for path in SESSION_OPENERS:
        assert opens_sessions(path), path
    for path in OTHERS:
        assert not opens_sessions(str(Path(path).resolve())), path


def test_what_is_not_a_readable_elf_file_is_unknown(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\nexec pam_open_session\n")
    assert imported_functions(str(script)) is None and not opens_sessions(str(script))
    real = Path(OTHERS[0]).resolve().read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(real[:200])  # headers point past the end
    assert imported_functions(str(cut)) is None
    assert imported_functions(str(tmp_path / "missing")) is None
    assert not is_elf32(str(script))
