#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: autosandbox_merge
short_description: Merge the fleet's profiles and synthesize one drop-in for the oldest systemd
version_added: "1.0.0"
description:
  - "Meant for the controller (C(delegate_to: localhost) or a play on C(localhost))."
  - Runs C(autosandbox merge) over the profiles that M(autosandbox.fleet.autosandbox_learn)
    returned, labelling each with its host, so the merged profile records which host saw
    which path, socket family, capability (C(autosandbox show merged.json --host HOST)).
  - Synthesizes one drop-in from the merged profile for the oldest systemd of the fleet
    (C(--systemd-version)), without BPF_FRAMEWORK directives unless every host has it; each
    directive's comment carries the evidence.
  - Writes C(merged.json), C(fleet.conf) and, with C(per_host=true), C(HOST.conf) (what each
    host alone would get, for review) into C(dest).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Everything is computed in a temporary directory; C(dest) is not written.
  diff_mode:
    support: full
    details: Shows C(fleet.conf) before and after.
  platform:
    platforms: posix
options:
  profiles:
    description: Host name to the path (on the controller) of the profile it learned.
    type: dict
    required: true
  systemd_versions:
    description:
      - Host name to its systemd version; the drop-in is written for the oldest.
      - Without it, for the controller's systemd.
    type: dict
    default: {}
  bpf:
    description:
      - Whether every target systemd has BPF_FRAMEWORK; default, as the controller has it.
    type: bool
  allow_write:
    description: Places the drop-in may make writable although they are sensitive or shared.
    type: list
    elements: path
    default: []
  per_host:
    description: Also write the drop-in each host alone would get, as C(HOST.conf).
    type: bool
    default: true
  dest:
    description: Directory on the controller for C(merged.json), C(fleet.conf), C(HOST.conf).
    type: path
    required: true
  executable:
    description: Path of the autosandbox command on the controller.
    type: path
requirements:
  - autosandbox on the controller
author:
  - autosandbox developers
"""

EXAMPLES = r"""
- name: Merge what every host saw, one drop-in for the oldest systemd
  autosandbox.fleet.autosandbox_merge:
    profiles: "{{ dict(groups.web | zip(groups.web | map('regex_replace', '^(.*)$', 'profiles/\\1.json'))) }}"
    systemd_versions: "{{ dict(groups.web | zip(groups.web | map('extract', hostvars, ['learned', 'systemd', 'version']))) }}"
    dest: fleet/
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
dropin:
  description: The fleet's drop-in (C(fleet.conf)).
  returned: success
  type: str
systemd_version:
  description: The systemd version it was written for (the oldest of C(systemd_versions)).
  returned: when C(systemd_versions) is given
  type: int
provenance:
  description: Which host saw what (C(hosts), and C(seen) by category, key, hosts).
  returned: success
  type: dict
per_host:
  description: Host name to the drop-in that host alone would get.
  returned: when C(per_host=true)
  type: dict
files:
  description: The files written (or, in check mode, that would be) in C(dest).
  returned: success
  type: list
  elements: str
"""

import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.autosandbox.fleet.plugins.module_utils.autosandbox import (
    read_text,
    run,
)


def synthesize(module, profile, out, version, bpf, allow_write):
    args = ["synthesize", profile, "--output", out]
    if version is not None:
        args += ["--systemd-version", str(version)]
    if bpf is not None:
        args.append("--bpf" if bpf else "--no-bpf")
    for path in allow_write:
        args += ["--allow-write", path]
    run(module, args, "autosandbox synthesize " + os.path.basename(profile))
    return read_text(out)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            profiles=dict(type="dict", required=True),
            systemd_versions=dict(type="dict", default={}),
            bpf=dict(type="bool"),
            allow_write=dict(type="list", elements="path", default=[]),
            per_host=dict(type="bool", default=True),
            dest=dict(type="path", required=True),
            executable=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    hosts = sorted(p["profiles"])
    if not hosts:
        module.fail_json(msg="no profiles to merge")
    try:
        versions = [int(v) for v in p["systemd_versions"].values()]
    except (TypeError, ValueError):
        module.fail_json(msg="systemd_versions must map hosts to integers")
    version = min(versions) if versions else None
    tmp = tempfile.mkdtemp(prefix="autosandbox-merge.")
    try:
        merged = os.path.join(tmp, "merged.json")
        args = ["merge", "--output", merged]
        for host in hosts:
            args += [p["profiles"][host], "--label", host]
        run(module, args, "autosandbox merge")
        files = {"merged.json": read_text(merged)}
        files["fleet.conf"] = synthesize(module, merged, os.path.join(tmp, "fleet.conf"),
                                         version, p["bpf"], p["allow_write"])
        per_host = {}
        if p["per_host"]:
            for host in hosts:
                v = p["systemd_versions"].get(host, version)
                per_host[host] = synthesize(module, p["profiles"][host],
                                            os.path.join(tmp, host + ".conf"), v, p["bpf"],
                                            p["allow_write"])
                files[host + ".conf"] = per_host[host]
        before = read_text(os.path.join(p["dest"], "fleet.conf"))
        changed = any(read_text(os.path.join(p["dest"], n)) != text
                      for n, text in files.items())
        if changed and not module.check_mode:
            if not os.path.isdir(p["dest"]):
                os.makedirs(p["dest"], 0o755)
            for name in files:
                # same directory, then rename: a reader never sees half a file
                target = os.path.join(p["dest"], name)
                shutil.copyfile(os.path.join(tmp, name), target + ".tmp")
                os.rename(target + ".tmp", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = dict(changed=changed, dropin=files["fleet.conf"],
                  provenance=json.loads(files["merged.json"]).get("provenance", {}),
                  files=sorted(os.path.join(p["dest"], n) for n in files))
    if version is not None:
        result["systemd_version"] = version
    if p["per_host"]:
        result["per_host"] = per_host
    if module._diff:
        result["diff"] = dict(before=before or "", after=files["fleet.conf"],
                              before_header=os.path.join(p["dest"], "fleet.conf"),
                              after_header=os.path.join(p["dest"], "fleet.conf"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
