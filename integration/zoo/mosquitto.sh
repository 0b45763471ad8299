#!/bin/sh
# mosquitto as Debian ships it (localhost:1883, persistence in /var/lib/mosquitto):
#   sh mosquitto.sh health|light|heavy|check
# heavy leaves a retained message and a queued QoS 1 message for an offline persistent
# client; check (after a restart) wants both back.
set -eu
H="-h 127.0.0.1"
EXPECT=/tmp/zoo-mosquitto.expected
case "$1" in
health)
    mosquitto_sub $H -t '$SYS/broker/version' -C 1 -W 10 >/dev/null ;;
light)
    mosquitto_pub $H -t zoo/light -m hello -r -q 1 &&
        [ "$(mosquitto_sub $H -t zoo/light -C 1 -W 10)" = hello ] ;;
heavy)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # 5 persistent QoS 1 sessions subscribe and leave; 3 publishers send 100 messages each
    # while they are away; each session then gets all 300 on reconnecting.
    for c in 1 2 3 4 5; do
        mosquitto_sub $H -c -i "zoo-heavy-$c" -q 1 -t 'zoo/heavy/#' -E
    done
    for p in 1 2 3; do
        seq 1 100 | sed "s/^/msg-$p-/" | mosquitto_pub $H -q 1 -t "zoo/heavy/$p" -l &
    done
    wait
    for c in 1 2 3 4 5; do
        mosquitto_sub $H -c -i "zoo-heavy-$c" -q 1 -t 'zoo/heavy/#' -C 300 -W 30 >"$tmp/$c" &
    done
    wait
    for c in 1 2 3 4 5; do
        [ "$(grep -c '^msg-' "$tmp/$c")" = 300 ] || { echo "session $c lost messages"; exit 1; }
    done
    # QoS 2, a large payload, then state to find again after a restart
    head -c 200000 /dev/zero | mosquitto_pub $H -q 2 -t zoo/big -s
    nonce="retained-$(date +%s%N)"
    mosquitto_pub $H -t zoo/retained -m "$nonce" -r -q 1
    mosquitto_sub $H -c -i zoo-persist -q 1 -t zoo/persist -E
    mosquitto_pub $H -t zoo/persist -m "queued-$nonce" -q 1
    echo "$nonce" >"$EXPECT" ;;
check)
    nonce=$(cat "$EXPECT")
    [ "$(mosquitto_sub $H -t zoo/retained -C 1 -W 10)" = "$nonce" ] ||
        { echo "retained message lost"; exit 1; }
    [ "$(mosquitto_sub $H -c -i zoo-persist -q 1 -t zoo/persist -C 1 -W 10)" = "queued-$nonce" ] ||
        { echo "queued message lost"; exit 1; } ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
