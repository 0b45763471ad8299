#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: autosandbox_revert
short_description: Undo the last autosandbox apply of a unit, byte for byte
version_added: "1.0.0"
description:
  - Runs C(autosandbox revert UNIT), which puts the unit back as autosandbox found it before
    its first C(apply) (no drop-in, or the file that first apply replaced, byte for byte),
    however many applies came since, and restarts the unit if it was running.
  - Nothing to revert (autosandbox has applied nothing to the unit) is not an error, the
    task reports C(ok); this makes it safe in a C(rescue) section.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports whether there is something to revert; nothing is changed.
  diff_mode:
    support: full
    details: Shows the drop-in before and after the revert.
  platform:
    platforms: posix
options:
  unit:
    description: The systemd service.
    type: str
    required: true
  executable:
    description: Path of the autosandbox command on the host.
    type: path
requirements:
  - autosandbox on the managed host, run as root
author:
  - autosandbox developers
"""

EXAMPLES = r"""
- name: Roll out, and take it back on this host if its own checks fail
  block:
    - name: Install the fleet's drop-in
      autosandbox.fleet.autosandbox_apply:
        unit: myapp.service
        content: "{{ lookup('ansible.builtin.file', 'fleet/fleet.validated.conf') }}"
  rescue:
    - name: Revert
      autosandbox.fleet.autosandbox_revert:
        unit: myapp.service
"""

RETURN = r"""
path:
  description: The drop-in file reverted.
  returned: always
  type: str
messages:
  description: What autosandbox revert did, one line each.
  returned: when changed and not in check mode
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.autosandbox.fleet.plugins.module_utils.autosandbox import (
    DROPIN_DIR,
    DROPIN_NAME,
    STATE_DIR,
    read_text,
    run,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type="str", required=True),
            executable=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    unit = module.params["unit"]
    path = os.path.join(DROPIN_DIR.format(unit=unit), DROPIN_NAME)
    state = STATE_DIR.format(unit=unit)
    result = dict(changed=False, path=path)
    if not os.path.exists(os.path.join(state, "state.json")):
        module.exit_json(msg=f"nothing to revert on {unit}", **result)
    result["changed"] = True
    if module._diff:
        previous = os.path.join(state, "previous.conf")
        result["diff"] = dict(before=read_text(path) or "", after=read_text(previous) or "",
                              before_header=path, after_header=path)
    if module.check_mode:
        module.exit_json(**result)
    _rc, _out, err = run(module, ["revert", unit], "autosandbox revert", **result)
    module.exit_json(messages=[x for x in err.splitlines() if x.strip()], **result)


if __name__ == "__main__":
    main()
