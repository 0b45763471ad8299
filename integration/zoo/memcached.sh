#!/bin/sh
# memcached as Debian ships it (127.0.0.1:11211): sh memcached.sh health|light|heavy|check
set -eu
mc() { nc -N -w 10 127.0.0.1 11211; }
case "$1" in
health|check)
    printf 'version\r\n' | mc | grep -q '^VERSION ' ;;
light)
    out=$(printf 'set zoo-light 0 0 5\r\nhello\r\nget zoo-light\r\nquit\r\n' | mc)
    echo "$out" | grep -q '^hello' ;;
heavy)
    # 40 clients at once, each storing 25 keys and reading them back on one connection.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    c=0
    while [ $c -lt 40 ]; do
        (
            k=0
            while [ $k -lt 25 ]; do
                v="value-$c-$k"
                printf 'set zoo-%s-%s 0 0 %s\r\n%s\r\n' "$c" "$k" "${#v}" "$v"
                k=$((k + 1))
            done
            k=0
            while [ $k -lt 25 ]; do printf 'get zoo-%s-%s\r\n' "$c" "$k"; k=$((k + 1)); done
            printf 'quit\r\n'
        ) | mc >"$tmp/$c" &
        c=$((c + 1))
    done
    wait
    c=0
    while [ $c -lt 40 ]; do
        [ "$(grep -c '^STORED' "$tmp/$c")" = 25 ] || { echo "client $c: stores lost"; exit 1; }
        [ "$(grep -c '^value-' "$tmp/$c")" = 25 ] || { echo "client $c: gets lost"; exit 1; }
        c=$((c + 1))
    done
    # a 512 KiB value, counters, statistics, a flush
    big=$(head -c 393216 /dev/zero | base64 -w0)
    out=$(printf 'set zoo-big 0 0 %s\r\n%s\r\nget zoo-big\r\nquit\r\n' "${#big}" "$big" | mc)
    echo "$out" | awk -v n=$((${#big} + 1)) 'length($0) == n { ok = 1 } END { exit !ok }' ||
        { echo "big value lost"; exit 1; }
    out=$(printf 'set zoo-n 0 0 1\r\n5\r\nincr zoo-n 10\r\ndecr zoo-n 3\r\nstats\r\nstats slabs\r\nflush_all\r\nget zoo-n\r\nquit\r\n' | mc)
    echo "$out" | grep -qx "$(printf '12\r')" || { echo "incr/decr: $out"; exit 1; }
    echo "$out" | grep -q '^STAT curr_connections' ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
