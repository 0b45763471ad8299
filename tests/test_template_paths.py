"""--template: a drop-in learned on one instance names each instance's own paths (%i, %I).
Hand-built profiles (tests/synth_profiles.py): nothing here reads the host."""

from __future__ import annotations

import subprocess

import pytest

from autosandbox.errors import UserError
from autosandbox.profile import Fact
from autosandbox.synth.specifiers import for_every_instance, generalize_word, unescape
from autosandbox.validate.candidate import parse_candidate
from tests.synth_profiles import synth, touch, unit_profile

OWN_DIR = Fact("dir", 0, 0, 0o755)


@pytest.mark.parametrize(("word", "instance", "expected"), [
    ("/srv/site/a", "site-a", "/srv/%I"),  # %I: "-" is "/"
    ("/srv/site-a", "site-a", "/srv/%i"),
    ("/var/lib/pg/15/main", "15-main", "/var/lib/pg/%I"),
    ("/run/pg/15-main.pid", "15-main", "/run/pg/15-main.pid"),  # not a whole component
    ("/srv/site-a-old", "site-a", "/srv/site-a-old"),
    ("/srv/old-site-a/x", "site-a", "/srv/old-site-a/x"),
    ("-/srv/web/x", "web", "-/srv/%i/x"),  # systemd's "-" prefix stays
    ('"/srv/my web/web"', "web", '"/srv/my web/%i"'),  # inside quotes
    ("/srv/web/web", "web", "/srv/%i/%i"),
    ("as-inst/blue", "blue", "as-inst/%i"),  # a relative StateDirectory= name
    ("/srv/100%%/x", "100%", "/srv/%i/x"),  # % was doubled when rendered
    ("/srv/a/b", "", "/srv/a/b"),
])
def test_whole_components_become_the_specifier(word: str, instance: str,
                                                expected: str) -> None:
    assert generalize_word(word, instance) == expected


def test_unescape_is_systemds() -> None:
    # The reference is systemd's own, where this machine has it.
    for name in ("site-a", "a\\x2db-c", "15-main"):
        try:
            ref = subprocess.run(["systemd-escape", "--unescape", name], check=True,
                                 capture_output=True, text=True).stdout.rstrip("\n")
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("no systemd-escape here")
        assert unescape(name) == ref


def test_instance_paths_are_written_for_every_instance() -> None:
    p = unit_profile("as-inst@site-a.service")
    touch(p, "/srv/as-inst/site/a/beat", "write", "create")
    p.facts["/srv/as-inst/site/a"] = OWN_DIR
    touch(p, "/var/log/shared/all.log", "write")
    p.facts["/var/log/shared"] = OWN_DIR
    sb = synth(p)
    learned = sb.values("ReadWritePaths") or []
    assert "/srv/as-inst/site/a" in learned, sb.render()
    general, changed = for_every_instance(sb, "site-a")
    assert changed == ["ReadWritePaths=/srv/as-inst/%I"]
    rw = general.values("ReadWritePaths") or []
    assert "/srv/as-inst/%I" in rw and "/srv/as-inst/site/a" not in rw
    assert any(v.startswith("/var/log/shared") for v in rw)  # not the instance's: as learned
    assert "ReadWritePaths=/srv/as-inst/%I" in general.render()
    assert "ReadWritePaths=/srv/as-inst/site/a" in sb.render()  # the original is not changed
    # the rest of the sandbox is untouched
    others = [s for s in general.settings if s.directive != "ReadWritePaths"]
    assert others == [s for s in sb.settings if s.directive != "ReadWritePaths"]


def test_nothing_named_after_the_instance_changes_nothing() -> None:
    p = unit_profile("as-inst@blue.service")
    touch(p, "/srv/data/file", "write")
    p.facts["/srv/data"] = OWN_DIR
    sb = synth(p)
    general, changed = for_every_instance(sb, "blue")
    assert general is sb and changed == []


CANDIDATE = "[Service]\nProtectSystem=strict\nReadWritePaths={}\n"


@pytest.mark.parametrize("value", ["/srv/as-inst/%I", "-/srv/%i/x", "/srv/%i/%I"])
def test_an_instance_candidate_may_name_its_instance(value: str) -> None:
    sb = parse_candidate(CANDIDATE.format(value), "as-inst@site-a.service")
    assert sb.values("ReadWritePaths") == [value]


@pytest.mark.parametrize(("value", "unit"), [
    ("/srv/as-inst/%I", "plain.service"),  # %I is empty outside a template: /srv/as-inst/
    ("/srv/%I-old", "as-inst@a.service"),  # not a whole component: never written so
    ("/srv/%n", "as-inst@a.service"),  # another specifier
    ("/srv/%%I/%", "as-inst@a.service"),
])
def test_other_specifiers_are_refused(value: str, unit: str) -> None:
    with pytest.raises(UserError, match="not a value autosandbox writes"):
        parse_candidate(CANDIDATE.format(value), unit)
