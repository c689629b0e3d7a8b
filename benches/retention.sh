#!/usr/bin/env bash
# Retention: what N successive full backups of a changing cluster cost in a pgcryptfs store
# today (every backup stored whole, compressed), against what a deduplicating store would
# keep: the bytes of the 8 KiB and of the 64 KiB blocks no earlier backup had, raw and with
# zstd level 1. Chooses the dedup unit (issue 12). Run as root; see README.md.
set -euo pipefail

SCALE=${SCALE:-20}
BACKUPS=${BACKUPS:-4}
LOAD_SECS=${LOAD_SECS:-60}
WORK=${WORK:-/var/tmp/pgcryptfs-retention}
OUT=${OUT:-/tmp/pgcryptfs-retention.md}
TIMEOUT=${TIMEOUT:-3600}          # per timed step, seconds
ROUNDS=1                          # for check_prerequisites
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGCRYPTFS_SRC=${PGCRYPTFS:-$HERE/../target/release/pgcryptfs}
UNIQUE_SRC=${UNIQUE_BLOCKS:-$HERE/../target/release/examples/unique_blocks}
# shellcheck source=lib.sh
source "$HERE/lib.sh"

check_prerequisites
[[ -x $UNIQUE_SRC ]] || die "$UNIQUE_SRC missing: cargo build --release --example unique_blocks"
[[ $BACKUPS =~ ^[1-9][0-9]*$ ]] || die "BACKUPS must be a positive integer"
[[ $LOAD_SECS =~ ^[1-9][0-9]*$ ]] || die "LOAD_SECS must be a positive integer"

# ---------------------------------------------------------------- layout
BIN=$WORK/bin; PGDATA=$WORK/pgdata; SOCK=$WORK/sock; LOGS=$WORK/logs
VAULT=$WORK/vault; MNT=$WORK/mnt; CACHE=$WORK/cache; STATE=$WORK/unique.state
PG_STARTED=0
PGC_WARNINGS=0
PGCRYPTFS=$BIN/pgcryptfs UNIQUE=$BIN/unique_blocks
LW=$LOGS/pgcryptfs.log

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    log "cleanup"
    if ((PG_STARTED)); then pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1; fi
    local m
    for m in $(mounts_under); do
        timeout 300 "$PGCRYPTFS" umount "$m" >&2 || fusermount3 -u "$m" || fusermount3 -u -z "$m"
    done
    finish_work pgcryptfs-retention "$rc" "$PGC_WARNINGS"
    exit $rc
}
make_work
mkdir -p "$BIN" "$SOCK" "$LOGS" "$MNT" "$CACHE"
chown postgres: "$SOCK" "$LOGS"
# Private copies: a concurrent cargo build must not swap a binary mid-run.
cp "$PGCRYPTFS_SRC" "$PGCRYPTFS"
cp "$UNIQUE_SRC" "$UNIQUE"

# Apparent bytes (what an object store bills) of the vault: packs and metadata.
store_bytes() { du -sb "$VAULT" | awk '{ print $1 }'; }
bmib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
sum() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s }'; }

# ---------------------------------------------------------------- header
{
echo "# Retention: pgcryptfs store growth per backup vs. unique 8 KiB / 64 KiB blocks"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- $("$PGCRYPTFS" --version) ($(readlink -f "$PGCRYPTFS_SRC"), built $(date -u -r "$PGCRYPTFS_SRC" '+%Y-%m-%d %H:%M UTC'))"
echo "- postgres: $("$PGBIN/postgres" --version)"
echo "- kernel: $(uname -r); nproc: $(nproc); loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
report_settings "SCALE=$SCALE BACKUPS=$BACKUPS LOAD_SECS=$LOAD_SECS (pgbench -c 2 before each backup)"
} | tee "$OUT"

# ---------------------------------------------------------------- postgres, vault
start_cluster
backup_setup

log "pgcryptfs init + mount (compression: the default)"
"$PGCRYPTFS" init "$VAULT" "${KEYOPTS[@]}" >&2
"$PGCRYPTFS" mount "$VAULT" "$MNT" "${KEYOPTS[@]}" --cache-dir "$CACHE" --allow-other --log-file "$LW" >&2 \
    || { tail -n 40 "$LW" >&2; die "pgcryptfs mount failed"; }
timed DUMMY "$LW" "$PGCRYPTFS" sync "$MNT"
PREV=$(store_bytes)

# ---------------------------------------------------------------- backups
declare -a R_LABEL R_BB R_SIZE R_GROWTH R_U8 R_U8Z R_U64 R_U64Z
TOTAL=$((BACKUPS + 1))
for ((n = 1; n <= TOTAL; n++)); do
    if ((n <= BACKUPS)); then
        R_LABEL[n]=$n
        log "backup $n/$BACKUPS: pgbench -c 2 -T $LOAD_SECS"
        pg "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -c 2 -T "$LOAD_SECS" postgres >>"$LOGS/load.log" 2>&1 \
            || { tail -n 20 "$LOGS/load.log" >&2; die "pgbench failed"; }
    else
        R_LABEL[n]="no load"
        log "backup $n: no load since the last one"
    fi
    mkdir "$MNT/b$n"; chown postgres: "$MNT/b$n"
    # -c fast: no wait for a spread checkpoint (the load leaves many dirty pages).
    timed BB_S "$LW" "${BB[@]}" -c fast -D "$MNT/b$n"; R_BB[n]=$BB_S
    timed SYNC_S "$LW" "$PGCRYPTFS" sync "$MNT"
    S=$(store_bytes); G=$((S - PREV)); R_GROWTH[n]=$(bmib "$G"); PREV=$S
    # The plain backup as read back through the mount, against every earlier backup.
    LINE=$(timeout "$TIMEOUT" "$UNIQUE" "$STATE" "$MNT/b$n" 2>>"$LOGS/unique.log") \
        || { tail -n 5 "$LOGS/unique.log" >&2; die "unique_blocks failed on backup $n"; }
    IFS='|' read -r _ 'R_SIZE[n]' 'R_U8[n]' 'R_U8Z[n]' 'R_U64[n]' 'R_U64Z[n]' _ <<<"${LINE// /}"
    log "  ${R_SIZE[n]} MiB in ${R_BB[n]} s (+ sync ${SYNC_S} s); store +${R_GROWTH[n]} MiB ($G bytes); new 8 KiB ${R_U8[n]}/${R_U8Z[n]} MiB, 64 KiB ${R_U64[n]}/${R_U64Z[n]} MiB"
done
timed DUMMY "$LW" "$PGCRYPTFS" umount "$MNT"
# How much of the growth is garbage (data overwritten or deleted while the backups were
# written), which gc reclaims, and how much is metadata.
END_PACKS=$(du -sb "$VAULT/packs" | awk '{ print $1 }'); END_META=$(du -sb "$VAULT/meta" | awk '{ print $1 }')
END_STORE=$(store_bytes)
log "pgcryptfs gc"
timed GC_S - "$PGCRYPTFS" gc "$VAULT" "${KEYOPTS[@]}"
GC_STORE=$(store_bytes)
if grep -vh ' INFO ' "$LW" >&2; then echo "WARNING: pgcryptfs logged the non-INFO lines above" >&2; PGC_WARNINGS=1; fi

# ---------------------------------------------------------------- report
col() { local -n a=$1; printf "%s\n" "${a[@]}"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }
L=$TOTAL
{
echo
echo "Database: $DBSIZE after pgbench -i -s $SCALE. MiB = 2^20 bytes."
echo
echo "| backup | backup MiB | pg_basebackup s | store growth MiB (pgcryptfs today) | new unique 8 KiB MiB (raw / zstd-1) | new unique 64 KiB MiB (raw / zstd-1) |"
echo "|---|---:|---:|---:|---:|---:|"
for ((i = 1; i <= TOTAL; i++)); do
    echo "| ${R_LABEL[i]} | ${R_SIZE[i]} | ${R_BB[i]} | ${R_GROWTH[i]} | ${R_U8[i]} / ${R_U8Z[i]} | ${R_U64[i]} / ${R_U64Z[i]} |"
done
echo "| **all $TOTAL** | $(sum $(col R_SIZE)) | $(sum $(col R_BB)) | $(sum $(col R_GROWTH)) | $(sum $(col R_U8)) / $(sum $(col R_U8Z)) | $(sum $(col R_U64)) / $(sum $(col R_U64Z)) |"
echo
echo "A backup of an unchanged cluster (\"no load\") costs ${R_GROWTH[L]} MiB in pgcryptfs today" \
     "($(pct "${R_GROWTH[L]}" "${R_SIZE[L]}") of its ${R_SIZE[L]} MiB), and ${R_U8Z[L]} MiB (8 KiB blocks) or ${R_U64Z[L]} MiB (64 KiB blocks)" \
     "of new zstd-1 blocks in a deduplicating store."
echo
echo "The store after the run: $(bmib "$END_STORE") MiB (packs $(bmib "$END_PACKS"), meta $(bmib "$END_META"));" \
     "after \`pgcryptfs gc\` (${GC_S} s), which drops overwritten and deleted data: $(bmib "$GC_STORE") MiB."
echo
echo "Store growth: apparent bytes of the vault directory (packs + metadata) after \`pgcryptfs sync\`, default compression."
echo "New unique: blocks (aligned to each file's start, BLAKE2b-256) that no earlier backup nor earlier block of this backup had;"
echo "zstd-1 compresses each such block alone (raw if it does not shrink), without the codec's header, padding or AEAD tag,"
echo "and a dedup store would add an index entry per block. Each backup was read back through the mount."
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT"
