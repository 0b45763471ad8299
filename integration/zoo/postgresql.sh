#!/bin/sh
# postgresql@15-main as Debian ships it (peer auth on /run/postgresql, 127.0.0.1:5432):
#   sh postgresql.sh health|light|heavy|check
set -eu
cd /    # the postgres user cannot read the caller's directory
pg() { runuser -u postgres -- "$@"; }
sql() { pg psql -X -v ON_ERROR_STOP=1 -qtA "$@"; }
case "$1" in
health)
    [ "$(sql -c 'select 1')" = 1 ] ;;
light)
    sql -c 'create table if not exists zoo_light (k serial primary key, v text)' \
        -c "insert into zoo_light (v) values ('light')" -c 'select count(*) from zoo_light' \
        >/dev/null ;;
heavy)
    # the database is made once and kept (dropping it would remove its directory); pgbench
    # -i drops and recreates its tables each time
    [ "$(sql -c "select 1 from pg_database where datname = 'zoo_heavy'")" = 1 ] ||
        pg createdb zoo_heavy
    pg pgbench -q -i -s 1 zoo_heavy
    pg pgbench -n -c 8 -j 2 -T 5 zoo_heavy >/dev/null          # 8 clients for 5 s
    pg pgbench -n -C -c 16 -j 2 -t 20 zoo_heavy >/dev/null     # a connection per transaction
    pg_isready -q -h 127.0.0.1 -p 5432 -t 10                   # TCP, not only the socket
    sql -d zoo_heavy -c 'create index zoo_bal on pgbench_accounts (abalance)' \
        -c 'vacuum analyze' -c 'checkpoint' -c 'select pg_switch_wal()' >/dev/null
    sql -d zoo_heavy -c "copy (select * from pgbench_branches) to stdout" >/dev/null
    [ "$(sql -d zoo_heavy -c 'select count(*) from pgbench_accounts')" = 100000 ] ;;
check)
    # what the heavier workload wrote survives a restart
    [ "$(sql -d zoo_heavy -c 'select count(*) from pgbench_accounts')" = 100000 ] ;;
*) echo "usage: $0 health|light|heavy|check" >&2; exit 2 ;;
esac
