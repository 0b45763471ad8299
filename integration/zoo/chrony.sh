#!/bin/sh
# chrony as Debian ships it (offline: no source is reachable): sh chrony.sh health|light|heavy|check
set -eu
case "$1" in
health|check)
    chronyc -n tracking >/dev/null ;;
light)
    chronyc -n tracking >/dev/null && chronyc -n sources >/dev/null ;;
heavy)
    i=0
    while [ $i -lt 5 ]; do
        for cmd in tracking 'sources -v' sourcestats activity serverstats ntpdata clients; do
            chronyc -n $cmd >/dev/null
        done
        i=$((i + 1))
    done
    chronyc -h 127.0.0.1 -n tracking >/dev/null    # the UDP command port, not the socket
    chronyc -n cyclelogs | grep -q '200 OK'
    chronyc -n 'reload sources' | grep -q '200 OK'
    chronyc -n 'burst 1/2' >/dev/null ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
