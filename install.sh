#!/usr/bin/env bash
# Install autosandbox and what it needs on Debian/Ubuntu (run as root).
#   ./install.sh         -> /opt/autosandbox (a virtualenv) and /usr/local/bin/autosandbox
#   ./install.sh --dev   -> ./.venv, editable, with the test tools (pytest, hypothesis, ruff, mypy)
set -euo pipefail
cd "$(dirname "$0")"
dev=0
[ "${1:-}" = "--dev" ] && dev=1
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# strace: the tracer. bpftrace: reports opens so that strace need not stop on them (the fast
# tracer; without it strace does, at a fifth of a busy server's throughput).
# systemd: systemctl/systemd-analyze. The rest builds PyGObject for pydbus.
apt-get update -qq
apt-get install -y -qq strace bpftrace systemd pkg-config gcc python3-dev python3-venv \
    libgirepository1.0-dev libcairo2-dev libdbus-1-dev >/dev/null
python=${PYTHON:-python3}
if [ $dev -eq 1 ]; then
    venv=.venv
else
    venv=${AUTOSANDBOX_VENV:-/opt/autosandbox}
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if [ $dev -eq 1 ]; then
    "$venv/bin/python" -m pip install -q -e '.[test]'
else
    "$venv/bin/python" -m pip install -q .
    ln -sf "$(cd "$venv" && pwd)/bin/autosandbox" /usr/local/bin/autosandbox
fi
echo "autosandbox installed in $venv" >&2
