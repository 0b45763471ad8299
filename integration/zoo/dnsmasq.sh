#!/bin/sh
# dnsmasq as Debian ships it (port 53, answers from /etc/hosts; no upstream is reachable):
#   sh dnsmasq.sh health|light|heavy|check
set -eu
q() { dig +time=3 +tries=2 +short @127.0.0.1 "$@"; }
case "$1" in
health|check)
    [ "$(q autosandbox-ci A)" = 127.0.1.1 ] ;;
light)
    [ "$(q localhost A)" = 127.0.0.1 ] && [ "$(q autosandbox-ci A)" = 127.0.1.1 ] &&
        [ "$(q -x 127.0.1.1)" = autosandbox-ci. ] ;;
heavy)
    # 300 queries in one batch, 8 batches at once, over UDP; then TCP, PTR, AAAA, CHAOS
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    i=0
    while [ $i -lt 100 ]; do
        printf 'localhost A\nautosandbox-ci A\nlocalhost AAAA\n'
        i=$((i + 1))
    done >"$tmp/batch"
    b=0
    while [ $b -lt 8 ]; do
        dig +time=3 +tries=2 +short @127.0.0.1 -f "$tmp/batch" >"$tmp/out$b" &
        b=$((b + 1))
    done
    wait
    b=0
    while [ $b -lt 8 ]; do
        [ "$(grep -cx 127.0.1.1 "$tmp/out$b")" = 100 ] || { echo "batch $b lost answers"; exit 1; }
        b=$((b + 1))
    done
    [ "$(q +tcp autosandbox-ci A)" = 127.0.1.1 ]
    [ "$(q -x 127.0.0.1)" = localhost. ]
    [ "$(q localhost AAAA)" = ::1 ]
    q CHAOS TXT cachesize.bind | grep -q '[0-9]'
    q CHAOS TXT hits.bind | grep -q '[0-9]' ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
