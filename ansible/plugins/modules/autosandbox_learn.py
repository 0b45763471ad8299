#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: autosandbox_learn
short_description: Learn what a systemd service needs by tracing it on this host
version_added: "1.0.0"
description:
  - Runs C(autosandbox learn UNIT --duration DURATION --no-validate --json) on the managed host
    and returns the profile (what the service was seen to do), the drop-in that host alone
    would get, and the host's systemd version and build features.
  - The unit is restarted under a runtime tracing drop-in and put back as it was found; its
    configuration is not changed, so the task never reports C(changed).
  - The profile and drop-in are written to a private temporary directory and removed before
    the module returns; autosandbox keeps its own copy of the unvalidated drop-in in
    C(/var/lib/autosandbox/UNIT/).
  - Validation is left to the fleet's canary (M(autosandbox.fleet.autosandbox_apply) with
    C(validate=true)), which proves the merged drop-in rather than one host's.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode the unit is not restarted or traced; only the systemd facts are returned.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  unit:
    description: The systemd service to learn, for example C(myapp.service).
    type: str
    required: true
  duration:
    description: How long to trace (C(30s), C(10m)), while the host's real workload runs.
    type: str
    default: 30s
  exercise:
    description:
      - A command run on the host while tracing (a workload), for example
        C(curl -fsS http://127.0.0.1:8080/).
    type: str
  tracer:
    description: The autosandbox tracer (C(auto) is the fast one where tracefs allows it).
    type: str
    choices: [auto, fast, full]
    default: auto
  executable:
    description: Path of the autosandbox command on the host (default, the one on C(PATH)).
    type: path
requirements:
  - autosandbox on the managed host, run as root
author:
  - autosandbox developers
"""

EXAMPLES = r"""
- name: Learn myapp on every host, with each host's own workload
  autosandbox.fleet.autosandbox_learn:
    unit: myapp.service
    duration: 10m
    exercise: "curl -fsS http://127.0.0.1:8080/"
  register: learned

- name: Keep the profile on the controller for autosandbox_merge
  ansible.builtin.copy:
    content: "{{ learned.profile | to_json }}"
    dest: "profiles/{{ inventory_hostname }}.json"
    mode: "0600"
  delegate_to: localhost
"""

RETURN = r"""
profile:
  description: The learned profile (autosandbox's versioned JSON); absent in check mode.
  returned: success, not in check mode
  type: dict
dropin:
  description: The drop-in synthesized from this host's profile alone (not validated).
  returned: success, not in check mode
  type: str
systemd:
  description: This host's systemd.
  returned: always
  type: dict
  contains:
    version:
      description: The systemd version.
      type: int
      sample: 252
    features:
      description: Its build features, as C(systemctl --version) prints them.
      type: list
      elements: str
    bpf:
      description: Whether it has BPF_FRAMEWORK (C(SocketBindAllow=) and friends).
      type: bool
exposure:
  description: C(systemd-analyze security) exposure before and after, as the CLI reports it.
  returned: success, not in check mode
  type: dict
"""

import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.autosandbox.fleet.plugins.module_utils.autosandbox import (
    run_json,
    systemd_info,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type="str", required=True),
            duration=dict(type="str", default="30s"),
            exercise=dict(type="str"),
            tracer=dict(type="str", default="auto", choices=["auto", "fast", "full"]),
            executable=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, systemd=systemd_info(module))
    if module.check_mode:
        module.exit_json(msg="check mode: {} not traced".format(p["unit"]), **result)
    tmp = tempfile.mkdtemp(prefix="autosandbox-learn.")
    try:
        profile_path = os.path.join(tmp, "profile.json")
        args = ["learn", p["unit"], "--duration", p["duration"], "--no-validate", "--json",
                "--quiet", "--tracer", p["tracer"], "--profile-out", profile_path,
                "--output", os.path.join(tmp, "dropin.conf"),
                "--systemd-version", str(result["systemd"]["version"])]
        if p["exercise"]:
            args += ["--exercise", p["exercise"]]
        _rc, out, _err = run_json(module, args, "autosandbox learn", **result)
        try:
            with open(profile_path, encoding="utf-8") as f:
                profile = json.load(f)
        except (OSError, ValueError) as exc:
            module.fail_json(msg=f"autosandbox learn left no profile: {exc}", **result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    module.exit_json(profile=profile, dropin=out.get("dropin"), exposure=out.get("exposure"),
                     **result)


if __name__ == "__main__":
    main()
