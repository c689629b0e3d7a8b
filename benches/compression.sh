#!/usr/bin/env bash
# The chunk codec on PostgreSQL data: stored size and single-core sealing/opening speed per
# compression setting, on a pgbench cluster's data directory (tables, indexes) and on the WAL
# a pgbench run writes. Chooses the default of --compression (docs/PERFORMANCE.md,
# "Compression"). Run as root; see README.md.
set -euo pipefail

SCALE=${SCALE:-20}
SECONDS_LOAD=${SECONDS_LOAD:-30}
LEVELS=${LEVELS:-off,1,2,3,6}
WORK=${WORK:-/var/tmp/pgcryptfs-compression}
OUT=${OUT:-/tmp/pgcryptfs-compression.md}
TIMEOUT=${TIMEOUT:-3600}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CODEC=${CODEC:-$HERE/../target/release/examples/chunk_codec}
# shellcheck source=lib.sh
source "$HERE/lib.sh"

[[ -x $CODEC ]] || die "$CODEC missing: cargo build --release --example chunk_codec"
PGDATA=$WORK/pgdata; SOCK=$WORK/sock; LOGS=$WORK/logs
PG_STARTED=0
cleanup() {
    local rc=$?
    set +e
    ((PG_STARTED)) && pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
    rm -rf --one-file-system "$WORK"
    exit $rc
}
[[ -e $WORK ]] && die "$WORK exists; remove it (or set WORK=) first"
mkdir -p "$WORK" "$SOCK" "$LOGS"
trap cleanup EXIT
trap 'exit 130' INT TERM
chown -R postgres: "$WORK"
start_cluster
log "pgbench for $SECONDS_LOAD s (WAL)"
pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt -c CHECKPOINT >/dev/null
pg "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -c 2 -T "$SECONDS_LOAD" postgres >"$LOGS/load.log" 2>&1
pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt -c CHECKPOINT >/dev/null
# A hard case: a table of random md5 text (no repetition but hex digits).
log "a table of md5 text"
pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt \
    -c "CREATE TABLE md5 AS SELECT i, md5(random()::text) AS h FROM generate_series(1, 2000000) i" -c CHECKPOINT >/dev/null
MD5REL=$(pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt -c "SELECT pg_relation_filepath('md5')")
mkdir -p "$WORK/md5"; cp "$PGDATA/$MD5REL" "$WORK/md5/"
{
    echo "# Chunk codec on PostgreSQL data ($(date -u +%F), pgbench -s $SCALE, $DBSIZE; 64 KiB chunks, one core)"
    echo
    echo "## Tables and indexes (base/)"
    echo
    timeout "$TIMEOUT" "$CODEC" "$PGDATA/base" 65536 "$LEVELS"
    echo
    echo "## A table of 2,000,000 random md5 strings (the hard case)"
    echo
    timeout "$TIMEOUT" "$CODEC" "$WORK/md5" 65536 "$LEVELS"
    echo
    echo "## WAL after ${SECONDS_LOAD} s of pgbench (pg_wal/)"
    echo
    timeout "$TIMEOUT" "$CODEC" "$PGDATA/pg_wal" 65536 "$LEVELS"
} | tee "$OUT"
