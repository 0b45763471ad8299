#!/bin/sh
# Inside the Vagrant VM (integration/run-vagrant runs it after the suite): one real
# `autosandbox learn` of the as-nginx example service with the CLI that install.sh installed
# (/usr/local/bin/autosandbox, not /src), validated by restarts; then the service still works
# unchanged. Exit status: learn's, or 1 if a check after it fails. Run as root from /src.
set -eu
DURATION=${1:-20s}
unit=as-nginx.service
out=/var/tmp/as-nginx.conf
exercise='for i in 1 2 3 4 5; do curl -fsS http://127.0.0.1:8081/ >/dev/null; done'

cleanup() {
    systemctl stop "$unit" 2>/dev/null || true
    rm -rf /etc/systemd/system/$unit /etc/as-nginx /srv/as-nginx
    systemctl daemon-reload
}
trap cleanup EXIT

install -m 644 integration/services/as-nginx/$unit /etc/systemd/system/$unit
cp -r integration/services/as-nginx/root/. /
systemctl daemon-reload
systemctl start "$unit"
i=0
until curl -fsS http://127.0.0.1:8081/ >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 60 ] || { echo "as-nginx did not answer" >&2; exit 1; }
    sleep 1
done

before=$(systemctl show -p ActiveState -p FragmentPath -p DropInPaths "$unit")
echo "+ autosandbox learn $unit --duration $DURATION --exercise '$exercise' -o $out"
start=$(date +%s)
autosandbox learn "$unit" --duration "$DURATION" --exercise "$exercise" \
    --health-url http://127.0.0.1:8081/ -o "$out"
echo "learn took $(( $(date +%s) - start ))s; the validated drop-in:"
cat "$out"

fail=0
grep -q '^ProtectSystem=strict$' "$out" || { echo "FAIL: no ProtectSystem=strict" >&2; fail=1; }
grep -q '^# autosandbox: validated' "$out" || { echo "FAIL: not validated" >&2; fail=1; }
after=$(systemctl show -p ActiveState -p FragmentPath -p DropInPaths "$unit")
[ "$before" = "$after" ] || { echo "FAIL: unit not restored: $before -> $after" >&2; fail=1; }
curl -fsS http://127.0.0.1:8081/ >/dev/null || { echo "FAIL: as-nginx stopped answering" >&2; fail=1; }
exit $fail
