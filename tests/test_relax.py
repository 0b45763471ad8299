"""Relaxing with evidence: what a denial may loosen, and what it may not."""

from __future__ import annotations

from autosandbox.validate.denials import Denial
from autosandbox.validate.relax import relax_by_evidence
from autosandbox.validate.trials import parse_candidate


def _home(denials: list[Denial]) -> list[str] | None:
    sb = parse_candidate("[Service]\nProtectSystem=strict\nProtectHome=yes\n", "x.service")
    relax_by_evidence(sb, denials, 1)
    return sb.values("ProtectHome")


def test_a_refused_open_under_home_relaxes_protect_home() -> None:
    opened = Denial("eacces", "/root/.config/app.ini", "audit", "openat() = EACCES", "openat")
    assert _home([opened]) == ["read-only"]


def test_a_refused_lookup_relaxes_nothing() -> None:
    looked = Denial("eacces", "/root/.local/lib/python3.11/site-packages", "audit",
                    "newfstatat() = EACCES", "newfstatat")
    assert _home([looked]) == ["yes"]
