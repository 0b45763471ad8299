#!/usr/bin/env bash
# Install autosandbox and what it needs on Debian/Ubuntu (run as root).
#   ./install.sh         -> /opt/autosandbox (a virtualenv) and /usr/local/bin/autosandbox
#   ./install.sh --dev   -> ./.venv, editable, with the test tools (pytest, hypothesis, ruff, mypy)
#   ./install.sh --offline -> as the first, with no network: no apt, no PyPI; the Python
#                            dependencies must already be installed as Debian packages
#                            (python3-click -pydbus -gi -psutil -pyroute2, python3-venv -wheel)
set -euo pipefail
cd "$(dirname "$0")"
dev=0
offline=0
for arg in "$@"; do
    case $arg in
        --dev) dev=1 ;;
        --offline) offline=1 ;;
        *) echo "usage: install.sh [--dev | --offline]" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi
python=${PYTHON:-python3}
if [ $offline -eq 1 ]; then
    [ $dev -eq 0 ] || { echo "install.sh: --dev needs the network (PyPI)" >&2; exit 2; }
    command -v strace >/dev/null && command -v systemctl >/dev/null &&
        "$python" -c 'import click, pydbus, gi, psutil, pyroute2, wheel, ensurepip' || {
        echo "install.sh: --offline needs strace, systemd and the Python dependencies installed" \
             "(Debian: strace python3-click python3-pydbus python3-gi python3-psutil" \
             "python3-pyroute2 python3-venv python3-wheel)" >&2
        exit 1
    }
    command -v bpftrace >/dev/null || echo "install.sh: no bpftrace: the fast tracer ptraces opens" >&2
    venv=${AUTOSANDBOX_VENV:-/opt/autosandbox}
    # The venv sees Debian's packages; pip builds and installs autosandbox alone, from here.
    # Debian's pip (python3-pip), where installed, serves the venv too: seeding the venv with
    # its own pip takes minutes in an emulated VM.
    without_pip=
    "$python" -m pip --version >/dev/null 2>&1 && without_pip=--without-pip
    [ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages $without_pip "$venv"
    "$venv/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation .
    ln -sf "$(cd "$venv" && pwd)/bin/autosandbox" /usr/local/bin/autosandbox
    echo "autosandbox installed in $venv (offline, with the system's Python packages)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# strace: the tracer. bpftrace: reports opens so that strace need not stop on them (the fast
# tracer; without it strace does, at a fifth of a busy server's throughput).
# systemd: systemctl/systemd-analyze. The rest builds PyGObject for pydbus.
apt-get update -qq
apt-get install -y -qq strace bpftrace systemd pkg-config gcc python3-dev python3-venv \
    libgirepository1.0-dev libcairo2-dev libdbus-1-dev >/dev/null
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
