"""Relaxing with evidence: what a denial may loosen, and what it may not."""

from __future__ import annotations

from autosandbox.synth.model import Denial
from autosandbox.validate.relax import relax_by_evidence
from autosandbox.validate.trials import parse_candidate


def _home(denials: list[Denial]) -> list[str] | None:
    sb = parse_candidate("[Service]\nProtectSystem=strict\nProtectHome=yes\n", "x.service")
    relaxed, _ = relax_by_evidence(sb, denials, 1)
    return relaxed.values("ProtectHome")


def test_a_refused_open_under_home_relaxes_protect_home() -> None:
    opened = Denial("eacces", "/root/.config/app.ini", "audit", "openat() = EACCES", "openat")
    assert _home([opened]) == ["read-only"]


def test_a_refused_lookup_relaxes_nothing() -> None:
    looked = Denial("eacces", "/root/.local/lib/python3.11/site-packages", "audit",
                    "newfstatat() = EACCES", "newfstatat")
    assert _home([looked]) == ["yes"]


def _relaxed(text: str, denial: Denial) -> list[str]:
    sb = parse_candidate("[Service]\n" + text, "x.service")
    return [r.directive for r in relax_by_evidence(sb, [denial], 1)[1]]


def test_the_catalogue_says_which_denial_relaxes_which_row() -> None:
    dev = "ProtectSystem=strict\nPrivateDevices=yes\n"
    assert _relaxed(dev, Denial("eacces", "/dev/ttyS0", "journal", "x")) == ["PrivateDevices"]
    assert _relaxed(dev, Denial("eacces", "/devices", "journal", "x")) == []
    tunables = "ProtectSystem=strict\nProtectKernelTunables=yes\n"
    erofs = Denial("erofs", "/proc/sys/net/core/somaxconn", "journal", "x")
    assert _relaxed(tunables, erofs) == ["ProtectKernelTunables"]
    # only a write refused by the read-only mount: a refused read is not the row's doing
    assert _relaxed(tunables, Denial("eacces", erofs.path, "journal", "x")) == []
    home = "ProtectSystem=strict\nProtectHome=yes\n"
    assert _relaxed(home, Denial("eacces", "/home", "journal", "x")) == ["ProtectHome"]
    assert _relaxed(home, Denial("eacces", "/homework/x", "journal", "x")) == []


def test_a_refused_family_names_its_row_before_a_path_the_line_mentions() -> None:
    text = ("ProtectSystem=strict\nProtectHome=yes\n"
            "RestrictAddressFamilies=AF_UNIX\nRestrictAddressFamilies=AF_INET\n")
    line = Denial("eafnosupport", "/home/app/run.sock", "journal",
                  "socket: Address family not supported by protocol (/home/app/run.sock)")
    assert _relaxed(text, line) == ["RestrictAddressFamilies"]
