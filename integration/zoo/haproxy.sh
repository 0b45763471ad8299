#!/bin/sh
# haproxy with the stock global section plus the test frontends of haproxy-zoo.cfg
# (127.0.0.1:8405 -> backend -> 127.0.0.1:8406): sh haproxy.sh health|light|heavy|check
set -eu
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
cli() { printf '%s\n' "$2" | nc -N -w 10 -U "$1"; }
load() {  # wrk ARGS...: fails on a non-2xx/3xx answer, a connect, write or timeout error
    out=$(wrk "$@")
    # "read" errors are keep-alive connections the server closed after its
    # MaxKeepAliveRequests (100 on apache2): at most one per 100 requests is normal
    echo "$out" | awk '
        / requests in / { n = $1 }
        /Non-2xx/ { bad = 1 }
        /Socket errors:/ { gsub(",", ""); if ($4 + $8 + $10 > 0 || $6 > n / 100) bad = 1 }
        END { exit bad || !n }' || { echo "$out"; return 1; }
}
case "$1" in
health|check)
    curl -fsS http://127.0.0.1:8405/ | grep -q 'zoo origin' ;;
light)
    curl -fsS http://127.0.0.1:8405/ | grep -q 'zoo origin' &&
        [ "$(code http://127.0.0.1:8405/missing)" = 404 ] &&
        cli /run/haproxy/admin.sock 'show info' | grep -q '^Name: HAProxy' ;;
heavy)
    load -t2 -c32 -d4s http://127.0.0.1:8405/
    # a new connection per request: 16 clients at once, 25 requests each
    seq 16 | xargs -P 16 -I{} sh -c 'for i in $(seq 25); do curl -fsS -o /dev/null \
        -H "Connection: close" http://127.0.0.1:8405/ || exit 1; done'
    cli /run/haproxy/admin.sock 'show stat' | grep -q '^zoo_origin,origin,'
    cli /run/haproxy/admin.sock 'show servers state' | grep -q 'origin'
    cli /run/haproxy-master.sock 'show proc' | grep -q 'master' ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
