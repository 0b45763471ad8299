# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the autosandbox modules share: finding and running the CLI, the host's systemd."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

# Options every module that restarts the unit passes on to the CLI's health checks.
HEALTH_OPTIONS = dict(
    health_url=dict(type="str"),
    health_cmd=dict(type="str"),
    health_port=dict(type="str"),
    exercise=dict(type="str"),
    settle=dict(type="str"),
)

DROPIN_DIR = "/etc/systemd/system/{unit}.d"
DROPIN_NAME = "50-autosandbox.conf"
STATE_DIR = "/var/lib/autosandbox/{unit}"


def cli(module):
    """The autosandbox command: the `executable` option, else the one on PATH."""
    exe = module.params.get("executable")
    if exe:
        if not os.access(exe, os.X_OK):
            module.fail_json(msg=f"executable {exe} is not an executable file")
        return exe
    return module.get_bin_path("autosandbox", required=True)


def health_args(params):
    args = []
    for name in HEALTH_OPTIONS:
        if params.get(name) is not None:
            args += ["--" + name.replace("_", "-"), params[name]]
    return args


def last_error(stderr, stdout=""):
    """The CLI's one-line error (its last line on stderr)."""
    lines = [x for x in (stderr or stdout or "").splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def run(module, args, what, ok=(0,), **extra):
    """Run the CLI; fail the task with its one-line error unless its exit status is in ok."""
    rc, out, err = module.run_command([cli(module), *args])
    if rc not in ok:
        module.fail_json(msg=f"{what} failed (exit {rc}): {last_error(err, out)}",
                         rc=rc, stdout=out, stderr=err, **extra)
    return rc, out, err


def run_json(module, args, what, ok=(0,), **extra):
    rc, out, err = run(module, args, what, ok, **extra)
    try:
        return rc, json.loads(out), err
    except ValueError:
        module.fail_json(msg=f"{what} printed no JSON: {last_error(err, out)}",
                         rc=rc, stdout=out, stderr=err, **extra)
    return rc, None, err  # not reached


def systemd_info(module):
    """version (int), features (the +/- build flags) and bpf (BPF_FRAMEWORK) of this host."""
    rc, out, err = module.run_command(["systemctl", "--version"])
    match = re.match(r"systemd (\d+)", out or "")
    if rc != 0 or not match:
        module.fail_json(msg=f"cannot read the systemd version: {last_error(err, out)}")
    lines = out.splitlines()
    features = lines[1].split() if len(lines) > 1 else []
    return dict(version=int(match.group(1)), features=features,
                bpf="+BPF_FRAMEWORK" in features)


def directives(text):
    """The directive lines of a drop-in (comments and blank lines left out)."""
    return [x.strip() for x in (text or "").splitlines()
            if x.strip() and not x.lstrip().startswith(("#", ";"))]


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None
