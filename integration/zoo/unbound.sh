#!/bin/sh
# unbound as Debian ships it (127.0.0.1:53, its built-in local zones, control socket
# /run/unbound.ctl; offline: no recursion):   sh unbound.sh health|light|heavy|check
set -eu
q() { dig +time=3 +tries=2 +short @127.0.0.1 "$@"; }
case "$1" in
health|check)
    [ "$(q localhost A)" = 127.0.0.1 ] ;;
light)
    [ "$(q localhost A)" = 127.0.0.1 ] && [ "$(q -x 127.0.0.1)" = localhost. ] ;;
heavy)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    i=0
    while [ $i -lt 100 ]; do printf 'localhost A\nlocalhost AAAA\n1.0.0.127.in-addr.arpa PTR\n'
        i=$((i + 1)); done >"$tmp/batch"
    b=0
    while [ $b -lt 8 ]; do
        dig +time=3 +tries=2 +short @127.0.0.1 -f "$tmp/batch" >"$tmp/out$b" &
        b=$((b + 1))
    done
    wait
    b=0
    while [ $b -lt 8 ]; do
        [ "$(grep -cx 127.0.0.1 "$tmp/out$b")" = 100 ] || { echo "batch $b lost answers"; exit 1; }
        b=$((b + 1))
    done
    [ "$(q +tcp localhost A)" = 127.0.0.1 ]
    # the control socket: status, statistics, a local record added and served, removed
    unbound-control status >/dev/null
    unbound-control stats_noreset | grep -q '^total.num.queries='
    unbound-control local_data zoo-heavy.test. 300 IN A 192.0.2.7 | grep -qx ok
    [ "$(q zoo-heavy.test A)" = 192.0.2.7 ]
    unbound-control local_data_remove zoo-heavy.test. | grep -qx ok
    unbound-control flush_zone localhost. >/dev/null ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
