#!/bin/sh
# apache2 as Debian ships it (port 80, /var/www/html, mod_status for local clients):
#   sh apache2.sh health|light|heavy|check
set -eu
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
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
    curl -fsS -o /dev/null http://127.0.0.1/ ;;
light)
    curl -fsS -o /dev/null http://127.0.0.1/ && [ "$(code http://127.0.0.1/zoo-missing)" = 404 ] ;;
heavy)
    load -t2 -c32 -d4s http://127.0.0.1/                               # keep-alive
    # a new connection per request: 16 clients at once, 25 requests each
    seq 16 | xargs -P 16 -I{} sh -c 'for i in $(seq 25); do curl -fsS -o /dev/null \
        -H "Connection: close" http://127.0.0.1/ || exit 1; done'
    curl -fsS 'http://127.0.0.1/server-status?auto' | grep -q '^Total Accesses'
    [ "$(code -I http://127.0.0.1/)" = 200 ]
    [ "$(code http://127.0.0.1/zoo-missing)" = 404 ]
    [ "$(code http://127.0.0.1/icons/)" = 403 ] ;;    # autoindex refused by the default config
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
