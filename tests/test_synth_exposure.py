"""The exposure printed is the applied unit's: offline scoring counts PrivateMounts= the way
the running manager does. Measured in the integration container (systemd 252): the printed
score was 0.2 above `systemd-analyze security UNIT` on each of 8 applied stock services, all
from PrivateMounts=; each setting alone on a bare unit showed which ones imply it online."""

from __future__ import annotations

from pathlib import Path

import pytest

from autosandbox.systemd import analyze
from autosandbox.systemd.manager import ServiceInfo
from autosandbox.systemd.session import unit_text

UNIT = "[Unit]\nDescription=t\n[Service]\nExecStart=/bin/sleep infinity\n"


def score(*lines: str) -> float:
    return analyze.security(UNIT, "\n".join(["[Service]", *lines]) + "\n").exposure


@pytest.mark.parametrize("setting", ["ProtectSystem=strict", "ProtectHome=read-only",
                                     "PrivateTmp=yes", "PrivateDevices=yes",
                                     "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                                     "ProtectControlGroups=yes", "DynamicUser=yes"])
def test_settings_that_imply_private_mounts_online_score_with_it(setting: str) -> None:
    assert score(setting) == score(setting, "PrivateMounts=yes")
    assert score(setting, "PrivateMounts=no") == score(setting, "PrivateMounts=yes")


@pytest.mark.parametrize("setting", ["ReadWritePaths=/var/lib", "ProtectKernelLogs=yes",
                                     "PrivateNetwork=yes", "ProtectSystem=no"])
def test_other_settings_score_as_written(setting: str) -> None:
    assert score(setting) > score(setting, "PrivateMounts=yes")


def test_verify_is_unchanged_by_scoring() -> None:
    assert analyze.verify(UNIT, "[Service]\nProtectSystem=strict\n") == []


def _info(tmp_path: Path, dropins: dict[str, str]) -> ServiceInfo:
    (tmp_path / "web.service").write_text(UNIT)
    paths = []
    for name, text in sorted(dropins.items()):
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    return ServiceInfo("web.service", "loaded", "active", "running", "simple", "", "", False,
                       "", str(tmp_path / "web.service"), paths, "", 0, 0)


def test_a_later_drop_in_of_the_unit_overrides_ours_in_the_score(tmp_path: Path) -> None:
    # systemctl edit's override.conf sorts after 50-autosandbox.conf: its ProtectSystem=no wins
    info = _info(tmp_path, {"10-env.conf": "[Service]\nEnvironment=A=1\n",
                            "override.conf": "[Service]\nProtectSystem=no\n"})
    text = unit_text(info, tmp_path / "zz-autosandbox-trace.conf")
    ours = "[Service]\nProtectSystem=strict\nProtectHome=yes\n"
    assert analyze.security(text, ours).exposure == score("ProtectHome=yes")
    assert analyze.security(text, None).exposure == score("ProtectSystem=no")
    assert analyze.verify(text, ours) == []


def test_an_applied_drop_in_is_replaced_not_stacked(tmp_path: Path) -> None:
    info = _info(tmp_path, {"50-autosandbox.conf": "[Service]\nPrivateNetwork=yes\n"})
    text = unit_text(info, tmp_path / "zz-autosandbox-trace.conf")
    assert analyze.security(text, None).exposure == score("PrivateNetwork=yes")  # as found
    assert analyze.security(text, "[Service]\nProtectHome=yes\n").exposure == score(
        "ProtectHome=yes")
