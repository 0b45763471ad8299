"""A fleet with Ansible: three real hosts, one service, three workloads, one merged drop-in.

Run by integration/run-fleet, which boots three systemd-nspawn hosts (sshd, autosandbox in
/src, the as-fleet example service) on a bridge inside a network namespace and runs pytest
there; without it (AUTOSANDBOX_FLEET unset) everything here is skipped. Each host calls a
different endpoint of as-fleet: / (state only), /export (writes below /srv), /ipv6 (an
AF_INET6 socket), so a drop-in learned on one host breaks another's workload and only the
merged one serves all three. The tests run in order and share the hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

FLEET_FILE = os.environ.get("AUTOSANDBOX_FLEET")
pytestmark = pytest.mark.skipif(not FLEET_FILE, reason="needs the hosts of integration/run-fleet")

UNIT = "as-fleet.service"
BASE = "http://127.0.0.1:8085"
WORKLOADS = {"fleet1": f"curl -fsS {BASE}/", "fleet2": f"curl -fsS {BASE}/export",
             "fleet3": f"curl -fsS {BASE}/ipv6"}
DROPIN = f"/etc/systemd/system/{UNIT}.d/50-autosandbox.conf"
PLAY_TIMEOUT = 900  # generous: two cores shared with other work
# the fixture: work, repo, hosts (name -> address), key, env, artifacts, inventory
Fleet = dict[str, Any]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    assert FLEET_FILE is not None  # the module is skipped without it
    data = json.loads(Path(FLEET_FILE).read_text())
    work = Path(data["work"])
    repo = Path(data["repo"])
    coll = work / "collections" / "ansible_collections" / "autosandbox"
    coll.mkdir(parents=True, exist_ok=True)
    if not (coll / "fleet").exists():
        (coll / "fleet").symlink_to(repo / "ansible")
    hosts = {h["name"]: h["addr"] for h in data["hosts"]}
    inventory = {"fleet": {
        "hosts": {name: {"ansible_host": addr, "fleet_exercise": WORKLOADS[name]}
                  for name, addr in hosts.items()},
        "vars": {"ansible_user": "root", "ansible_ssh_private_key_file": data["key"],
                 "ansible_python_interpreter": "/usr/bin/python3"}}}
    (work / "inventory.json").write_text(json.dumps(inventory))
    (work / "tmp").mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(work), "LANG": "C.UTF-8",
        "ANSIBLE_COLLECTIONS_PATH": str(work / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        # no ssh master left running after a play; pipelining keeps connections few
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o UserKnownHostsFile=/dev/null "
                            "-o StrictHostKeyChecking=no -o ConnectTimeout=30",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    return {"work": work, "repo": repo, "hosts": hosts, "key": data["key"], "env": env,
            "artifacts": work / "artifacts", "inventory": work / "inventory.json"}


def playbook(fleet: Fleet, book: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook BOOK against the fleet; the CompletedProcess (output in .stdout)."""
    cmd = ["ansible-playbook", "-i", str(fleet["inventory"]), str(book),
           "-e", f"fleet_unit={UNIT}", "-e", "fleet_duration=5s",
           "-e", f"fleet_health_url={BASE}/health", "-e", "fleet_settle=2s",
           "-e", f"fleet_artifacts={fleet['artifacts']}",
           "-e", f"fleet_controller_autosandbox={fleet['repo'] / '.venv/bin/autosandbox'}",
           *extra]
    r = subprocess.run(cmd, env=fleet["env"], capture_output=True, text=True,
                       timeout=PLAY_TIMEOUT, cwd=fleet["work"])
    print(r.stdout[-20000:], r.stderr[-5000:])
    return r


def on(fleet: Fleet, host: str, command: str,
       check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a host over ssh (as the controller would reach it)."""
    r = subprocess.run(
        ["ssh", "-i", fleet["key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         f"root@{fleet['hosts'][host]}", command],
        capture_output=True, text=True, timeout=120)
    assert not check or r.returncode == 0, (host, command, r.stdout, r.stderr)
    return r


def site(fleet: Fleet) -> Path:
    path: Path = fleet["repo"] / "ansible" / "playbooks" / "site.yml"
    return path


def directive(text: str, name: str) -> str:
    """The values of directive `name` in a drop-in (comments left out), space-joined."""
    return " ".join(line.partition("=")[2] for line in text.splitlines()
                    if line.startswith(name + "="))


STATE: dict[str, Any] = {}  # what the first test rolled out, for the later ones


def test_learn_merge_canary_rollout(fleet: Fleet) -> None:
    r = playbook(fleet, site(fleet))
    assert r.returncode == 0, r.stdout[-3000:]
    fleet_conf = (fleet["artifacts"] / "fleet.validated.conf").read_text()
    assert "validated on as-fleet.service" in fleet_conf
    STATE["merged"] = fleet_conf
    # the canary went alone, first: the validated copy was kept before any other host ran
    rollout = r.stdout[r.stdout.index("PLAY [Roll out"):]
    first_batch = rollout[:rollout.index("TASK [This host's own workload")]
    assert "[fleet1]" in first_batch and "[fleet2]" not in first_batch
    for host in fleet["hosts"]:
        assert on(fleet, host, f"cat {DROPIN}", check=True).stdout == fleet_conf, host
        assert on(fleet, host, f"systemctl is-active {UNIT}").stdout.strip() == "active"
        for name, workload in WORKLOADS.items():  # every workload works on every host
            assert on(fleet, host, workload).returncode == 0, (host, name)
    # what made it wider than any one host, and who saw it
    assert "AF_INET6" in directive(fleet_conf, "RestrictAddressFamilies")
    assert "/srv/as-fleet/export" in directive(fleet_conf, "ReadWritePaths")
    own = {h: (fleet["artifacts"] / f"{h}.conf").read_text() for h in fleet["hosts"]}
    assert "AF_INET6" not in directive(own["fleet1"], "RestrictAddressFamilies")
    assert "/srv/as-fleet/export" not in directive(own["fleet1"], "ReadWritePaths")
    assert "AF_INET6" not in directive(own["fleet2"], "RestrictAddressFamilies")
    assert "/srv/as-fleet/export" not in directive(own["fleet3"], "ReadWritePaths")
    merged = json.loads((fleet["artifacts"] / "merged.json").read_text())
    seen = merged["provenance"]["seen"]
    assert seen["families"]["AF_INET6"] == ["fleet3"]
    assert sorted(merged["provenance"]["hosts"]) == ["fleet1", "fleet2", "fleet3"]
    export = [p for p in seen["paths"] if p.startswith("/srv/as-fleet/export")]
    assert export and all(seen["paths"][p] == ["fleet2"] for p in export), export
    show = subprocess.run([str(fleet["repo"] / ".venv/bin/autosandbox"), "show",
                           str(fleet["artifacts"] / "merged.json"), "--host", "fleet2"],
                          capture_output=True, text=True, timeout=60)
    assert show.returncode == 0, show.stderr
    assert "/srv/as-fleet/export" in show.stdout and "AF_INET6" not in show.stdout


def test_check_mode_changes_nothing_and_diff_shows_what_would(fleet: Fleet) -> None:
    if "merged" not in STATE:
        pytest.skip("needs the roll-out of test_learn_merge_canary_rollout")
    stamps = {h: on(fleet, h, f"stat -c %Y.%i {DROPIN}; systemctl show -p MainPID {UNIT}",
                    check=True).stdout for h in fleet["hosts"]}
    r = playbook(fleet, site(fleet), "--check", "--diff")
    assert r.returncode == 0, r.stdout[-3000:]
    recap = r.stdout[r.stdout.index("PLAY RECAP"):]
    for host in fleet["hosts"]:  # already rolled out: nothing would change
        assert f"{host}" in recap and "changed=0" in recap.split(host, 1)[1].splitlines()[0]
    # fleet1's own drop-in instead: the diff shows the family fleet3 needed going away
    r = playbook(fleet, site(fleet), "--check", "--diff", "-l", "fleet1",
                 "-e", f"fleet_dropin={fleet['artifacts'] / 'fleet1.conf'}")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "changed: [fleet1]" in r.stdout
    removed = [x for x in r.stdout.splitlines() if x.startswith("-RestrictAddressFamilies=")]
    assert removed and "AF_INET6" in removed[0], removed
    for host in fleet["hosts"]:  # not a file touched, not a restart
        assert on(fleet, host, f"stat -c %Y.%i {DROPIN}; systemctl show -p MainPID {UNIT}",
                  check=True).stdout == stamps[host], host


# Each host's own drop-in, applied where another workload runs: whose, on which host.
CROSS = {"fleet2": ["fleet1", "fleet3"], "fleet3": ["fleet2"]}


def test_single_host_dropins_fail_elsewhere(fleet: Fleet) -> None:
    if "merged" not in STATE:
        pytest.skip("needs the roll-out of test_learn_merge_canary_rollout")
    for sources in CROSS.values():
        for source in sources:
            assert (fleet["artifacts"] / f"{source}.conf").read_text() != STATE["merged"]
    book = fleet["work"] / "cross.yml"
    book.write_text(textwrap.dedent(f"""\
        - name: Apply other hosts' own drop-ins, with this host's workload
          hosts: {",".join(CROSS)}
          gather_facts: false
          vars:
            cross: {json.dumps(CROSS)}
          tasks:
            - name: Apply another host's own drop-in
              autosandbox.fleet.autosandbox_apply:
                unit: {UNIT}
                content: "{{{{ lookup('ansible.builtin.file', own_file) }}}}"
                force: true
                health_url: {BASE}/health
                exercise: "{{{{ fleet_exercise }}}}"
                settle: 2s
              vars:
                own_file: "{{{{ fleet_artifacts }}}}/{{{{ item }}}}.conf"
              loop: "{{{{ cross[inventory_hostname] }}}}"
              ignore_errors: true
              register: tried

            - name: Keep the results for the test
              ansible.builtin.copy:
                content: "{{{{ tried | to_json }}}}"
                dest: "{{{{ fleet_artifacts }}}}/cross-{{{{ inventory_hostname }}}}.json"
                mode: "0600"
              delegate_to: localhost
        """))
    r = playbook(fleet, book)
    assert r.returncode == 0, r.stdout[-3000:]  # failures ignored: each is looked at here
    for target, sources in CROSS.items():
        tried = json.loads((fleet["artifacts"] / f"cross-{target}.json").read_text())
        got = {res["item"]: res for res in tried["results"]}
        assert sorted(got) == sorted(sources)
        for source in sources:
            assert got[source].get("failed"), (source, target, got[source])
            assert "the previous drop-in is back" in got[source]["msg"], got[source]["msg"]
        # apply put the merged drop-in back by itself, and the host serves its workload again
        assert on(fleet, target, f"cat {DROPIN}", check=True).stdout == STATE["merged"]
        assert on(fleet, target, WORKLOADS[target]).returncode == 0


def test_broken_host_is_reverted_and_the_play_fails(fleet: Fleet) -> None:
    if "merged" not in STATE:
        pytest.skip("needs the roll-out of test_learn_merge_canary_rollout")
    # Roll out fleet1's own drop-in as if it were the reviewed one: the canary (fleet1)
    # validates it, fleet2 installs it, health (/health) passes, its workload (/export) fails.
    before3 = on(fleet, "fleet3", f"stat -c %Y.%i {DROPIN}", check=True).stdout
    r = playbook(fleet, site(fleet), "-e",
                 f"fleet_dropin={fleet['artifacts'] / 'fleet1.conf'}")
    assert r.returncode == 2, r.stdout[-3000:]
    assert "fleet2 was unhealthy under the drop-in and is reverted" in r.stdout
    rollout = r.stdout[r.stdout.index("PLAY [Roll out"):r.stdout.index("PLAY RECAP")]
    assert "[fleet3]" not in rollout  # the roll-out stopped at the failed batch
    # revert puts the host back as autosandbox found it (before the first apply: no drop-in)
    assert on(fleet, "fleet2", f"test ! -e {DROPIN}").returncode == 0
    assert on(fleet, "fleet2", f"systemctl is-active {UNIT}").stdout.strip() == "active"
    assert on(fleet, "fleet2", WORKLOADS["fleet2"]).returncode == 0
    assert on(fleet, "fleet3", f"stat -c %Y.%i {DROPIN}", check=True).stdout == before3
    assert on(fleet, "fleet3", f"cat {DROPIN}", check=True).stdout == STATE["merged"]
