#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: autosandbox_apply
short_description: Install a reviewed autosandbox drop-in, health-check, roll back if unhealthy
version_added: "1.0.0"
description:
  - Installs C(content) as C(/etc/systemd/system/UNIT.d/50-autosandbox.conf) with
    C(autosandbox apply), which backs up a file it replaces, restarts the unit, runs the
    health checks and puts the previous file back by itself if the unit is unhealthy (the
    task then fails). M(autosandbox.fleet.autosandbox_revert) puts the unit back as
    autosandbox found it before its first apply.
  - With C(validate=true) (the canary), C(autosandbox validate) first proves C(content) on
    this host by trial restarts under a runtime drop-in; if validation had to relax any
    directive, the fleet's drop-in missed something and the task fails without installing.
    The validated text (stamped as validated on the unit) is returned as C(dropin), for the
    other hosts to install without C(force).
  - Only what autosandbox writes is accepted (one C([Service]) section of its sandboxing
    directives, and comments).
  - Idempotent, the installed file is left alone (and the unit not restarted) when it has
    the same directives and was validated on the unit, or is byte for byte C(content).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the file would change; nothing is validated, installed or restarted.
  diff_mode:
    support: full
    details: Shows the drop-in file before and after.
  platform:
    platforms: posix
options:
  unit:
    description: The systemd service.
    type: str
    required: true
  content:
    description: The drop-in, as C(autosandbox_merge) or C(autosandbox synthesize) wrote it.
    type: str
    required: true
  validate:
    description: Prove C(content) by trial restarts before installing it (the canary).
    type: bool
    default: false
  force:
    description:
      - Install a drop-in that was not validated on C(unit) (it is still health-checked and
        rolled back if unhealthy).
    type: bool
    default: false
  health_url:
    description: An http(s) URL that must answer 2xx once the unit is restarted.
    type: str
  health_cmd:
    description: A command that must exit 0 once the unit is restarted.
    type: str
  health_port:
    description: A TCP port (or HOST:PORT) that must accept connections.
    type: str
  exercise:
    description: A workload command that must succeed (the host's real calls).
    type: str
  settle:
    description: How long the unit must stay healthy (C(5s)).
    type: str
  executable:
    description: Path of the autosandbox command on the host.
    type: path
requirements:
  - autosandbox on the managed host, run as root
author:
  - autosandbox developers
"""

EXAMPLES = r"""
- name: Canary, prove the fleet's drop-in here first
  autosandbox.fleet.autosandbox_apply:
    unit: myapp.service
    content: "{{ lookup('ansible.builtin.file', 'fleet/fleet.conf') }}"
    validate: true
    health_url: http://127.0.0.1:8080/health
  register: canary

- name: The others install what the canary validated
  autosandbox.fleet.autosandbox_apply:
    unit: myapp.service
    content: "{{ lookup('ansible.builtin.file', 'fleet/fleet.validated.conf') }}"
    health_url: http://127.0.0.1:8080/health
"""

RETURN = r"""
dropin:
  description: The drop-in installed (with C(validate=true), the validated text).
  returned: success
  type: str
path:
  description: Where it is installed.
  returned: always
  type: str
  sample: /etc/systemd/system/myapp.service.d/50-autosandbox.conf
validated:
  description: Whether this task validated it (trial restarts on this host).
  returned: success
  type: bool
restarts:
  description: Restarts the validation took, the baseline included.
  returned: when C(validate=true) and not in check mode
  type: int
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.autosandbox.fleet.plugins.module_utils.autosandbox import (
    DROPIN_DIR,
    DROPIN_NAME,
    HEALTH_OPTIONS,
    directives,
    health_args,
    read_text,
    run,
    run_json,
)


def write_temp(text):
    fd, path = tempfile.mkstemp(prefix="autosandbox-apply.", suffix=".conf")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def up_to_date(installed, content, unit, validate):
    if installed is None:
        return False
    if installed == content:
        return True
    # a validated copy of the same directives (the canary's, or an earlier run's) will do
    stamped = (f"# autosandbox: validated on {unit} ") in installed
    return (stamped or not validate) and directives(installed) == directives(content)


def validate_here(module, unit, text, result):
    """The canary: prove `text` by trials; fail if validation had to relax anything."""
    cand = write_temp(text)
    try:
        _rc, out, _err = run_json(
            module, ["validate", unit, cand, "--json", "--quiet", *health_args(module.params)],
            "autosandbox validate", ok=(0, 3), **result)
    finally:
        os.unlink(cand)
    result["restarts"] = out.get("restarts")
    if not out.get("healthy"):
        module.fail_json(msg="not healthy on {} under the drop-in (validation found no healthy "
                         "sandbox in {} restarts)".format(unit, out.get("restarts")),
                         notes=out.get("notes"), **result)
    if directives(out["dropin"]) != directives(text):
        module.fail_json(msg="validation had to relax the drop-in on this host: the merged "
                         "profile misses what this host needs; learn here again",
                         relaxed=out["dropin"], **result)
    return out["dropin"]


def main():
    spec = dict(
        unit=dict(type="str", required=True),
        content=dict(type="str", required=True),
        validate=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        executable=dict(type="path"),
    )
    spec.update(HEALTH_OPTIONS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    unit = p["unit"]
    content = p["content"] if p["content"].endswith("\n") else p["content"] + "\n"
    path = os.path.join(DROPIN_DIR.format(unit=unit), DROPIN_NAME)
    installed = read_text(path)
    result = dict(changed=False, path=path, validated=False)
    if up_to_date(installed, content, unit, p["validate"]):
        module.exit_json(dropin=installed, **result)
    result["changed"] = True
    if module._diff:
        result["diff"] = dict(before=installed or "", after=content, before_header=path,
                              after_header=path)
    if module.check_mode:
        module.exit_json(dropin=content, **result)
    text = content
    if p["validate"]:
        text = validate_here(module, unit, content, result)
        result["validated"] = True
        if module._diff:
            result["diff"]["after"] = text
    tmp = write_temp(text)
    try:
        args = ["apply", unit, tmp, "--json", *health_args(p)]
        if p["force"]:
            args.append("--force")
        run(module, args, "autosandbox apply (the previous drop-in is back)", **result)
    finally:
        os.unlink(tmp)
    module.exit_json(dropin=text, **result)


if __name__ == "__main__":
    main()
