"""A traced service must never inject a directive through a file name.

Hypothesis picks hostile names; a real program under strace writes to files with those names;
the drop-in must pass systemd-analyze verify silently, and parsing it back must give exactly
the paths written (or leave the path out, with a warning, where it cannot be written safely).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autosandbox import unitfile
from autosandbox.systemd import analyze
from autosandbox.trace import opens
from autosandbox.trace.command import trace_command

from .conftest import PYTHON, sandbox_for

HOSTILE = st.text(
    alphabet=st.sampled_from([*"ab %%\"'\\\n\t\r;#=[]$`*?~-+@:,.", "é", "\u2028", "\x01", "\x7f",
                              "\udcff"]),
    min_size=1, max_size=12,
).filter(lambda s: s not in (".", "..") and "/" not in s and "\x00" not in s)

NAMES_FILE = "names.bin"
WRITER = (
    "import os, sys\n"
    "base = sys.argv[1]\n"
    "for raw in open(os.path.join(base, 'names.bin'), 'rb').read().split(b'\\0'):\n"
    "    if raw:\n"
    "        with open(os.path.join(os.fsencode(base), raw), 'r+b') as f: f.write(b'x')\n"
)


def _base() -> Path:
    root = Path("/srv") if Path("/srv").is_dir() else Path("/var/local")
    return root / f"autosandbox-hostile-{os.getpid()}-{os.urandom(3).hex()}"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(names=st.lists(HOSTILE, min_size=1, max_size=4, unique=True))
def test_hostile_names_cannot_inject(names: list[str]) -> None:
    """strace reports the writes (its escapes decoded)."""
    check_names(names, fast=False)


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(names=st.lists(HOSTILE, min_size=8, max_size=16, unique=True))
def test_hostile_names_through_the_kernel_tracer_cannot_inject(names: list[str]) -> None:
    """bpftrace reports the opens (its escapes decoded), where the host has it: fewer,
    larger examples, as each trace starts bpftrace (seconds)."""
    check_names(names, fast=None)


def check_names(names: list[str], fast: bool | None) -> None:
    base = _base()
    base.mkdir(parents=True)
    try:
        raws = [os.fsencode(n) for n in names]
        for raw in raws:
            (Path(os.fsencode(base).decode("utf-8", "surrogateescape")) / os.fsdecode(raw)
             ).write_bytes(b"")
        (base / NAMES_FILE).write_bytes(b"\0".join(raws))
        result = trace_command([PYTHON, "-c", WRITER, str(base)], cwd="/", fast=fast)
        assert result.exit_code == 0
        profile = result.profile
        if fast is None and opens.available():
            assert "bpftrace:open" in profile.sources, profile.warnings
        sb = sandbox_for(profile)
        text = sb.render()
        unit = analyze.command_unit([PYTHON, "-c", "pass"])
        assert analyze.verify(unit, text) == [], text

        written = {str(base / os.fsdecode(r)) for r in raws}
        assert written <= set(profile.paths), "the tracer lost a hostile name"
        got = set(unitfile.values_of(text, "ReadWritePaths"))
        assert got <= written  # nothing but what was written, never a fragment
        for path in written - got:
            assert any(repr(path) in w for w in sb.warnings), f"{path!r} dropped silently"
        for path in got:
            assert unitfile.path_value(path) is not None
        # Every line is a comment, a section, or an assignment of a known directive.
        keys = {k for k, _ in unitfile.parse(text)}
        allowed = {"ProtectSystem", "ReadWritePaths", "ReadOnlyPaths", "ProtectHome", "PrivateTmp",
                   "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
                   "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
                   "ProtectHostname", "ProtectProc", "ProcSubset", "PrivateNetwork",
                   "RestrictAddressFamilies", "IPAddressDeny", "IPAddressAllow",
                   "CapabilityBoundingSet", "NoNewPrivileges", "RestrictSUIDSGID",
                   "RestrictNamespaces", "RestrictRealtime", "LockPersonality",
                   "MemoryDenyWriteExecute", "PrivateIPC", "RemoveIPC", "UMask",
                   "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber"}
        assert keys <= allowed, keys - allowed
    finally:
        shutil.rmtree(base, ignore_errors=True)


@given(st.text(min_size=1, max_size=40))
def test_comments_stay_comments(text: str) -> None:
    for line in unitfile.comment(text):
        assert line.startswith("# ")
        assert "\n" not in line and "\r" not in line and not line.endswith("\\")


@given(st.text(min_size=0, max_size=200), st.integers(min_value=10, max_value=150))
def test_quoted_lines_are_clipped_at_a_word_end(text: str, limit: int) -> None:
    """Evidence quotes a journal line; a long one is cut where a word ends and says so
    (seen: "... is not readable by root wi", "Spool error for /va")."""
    out = unitfile.clip(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
        return
    assert out.endswith("...")
    kept = out[:-3]
    assert text.startswith(kept)
    if " " in text[limit // 2 + 1:limit - 3]:  # a word ended in the second half: cut there
        assert text[len(kept)] in " ,;:"


def test_a_long_denial_is_clipped_between_words() -> None:
    line = ("Couldn't chmod message log /var/spool/exim4/msglog//1xaefo-0002Pf-32: Operation "
            "not permitted")
    assert unitfile.clip(line, 80) == ("Couldn't chmod message log "
                                       "/var/spool/exim4/msglog//1xaefo-0002Pf-32...")
    assert unitfile.clip(line, 200) == line


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30))
def test_path_values_round_trip(name: str) -> None:
    path = "/srv/" + name.replace("/", "_")
    value = unitfile.path_value(path)
    if value is None:
        return
    assert unitfile.split_words(value) == [path]
    assert "\n" not in value
