#!/usr/bin/env bash
# pg_basebackup into a plain directory vs. a pgcryptfs mount vs. a gocryptfs
# mount, plus the restore read (cp -a) from each.  Run as root.  See README.md.
set -euo pipefail

SCALE=${SCALE:-40}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/var/tmp/pgcryptfs-bench}
OUT=${OUT:-/tmp/pgcryptfs-bench.md}
TIMEOUT=${TIMEOUT:-3600}          # per timed step, seconds
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGCRYPTFS_SRC=${PGCRYPTFS:-$HERE/../target/release/pgcryptfs}
# shellcheck source=lib.sh
source "$HERE/lib.sh"

check_prerequisites
install_missing gocryptfs:gocryptfs fusermount3:fuse3
FUSE_CONF_ADDED=0
FUSE_DEV_MODE=

# ---------------------------------------------------------------- layout
BIN=$WORK/bin; PGDATA=$WORK/pgdata; SOCK=$WORK/sock; PLAIN=$WORK/plain
PGC=$WORK/pgc; GOC=$WORK/goc; REST=$WORK/restore; LOGS=$WORK/logs
PG_STARTED=0
PGC_WARNINGS=0
PGCRYPTFS=$BIN/pgcryptfs

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    log "cleanup"
    if ((PG_STARTED)); then pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1; fi
    local m
    for m in $(mounts_under); do
        case $m in
            "$PGC"/*) timeout 300 "$PGCRYPTFS" umount "$m" >&2 || fusermount3 -u "$m" || fusermount3 -u -z "$m" ;;
            *)        fusermount3 -u "$m" || umount "$m" || fusermount3 -u -z "$m" ;;
        esac
    done
    finish_work pgcryptfs-bench "$rc" "$PGC_WARNINGS"
    ((FUSE_CONF_ADDED)) && sed -i '/^user_allow_other$/d' /etc/fuse.conf
    [[ -n $FUSE_DEV_MODE ]] && chmod "$FUSE_DEV_MODE" /dev/fuse
    exit $rc
}
make_work
mkdir -p "$BIN" "$SOCK" "$PLAIN" "$PGC" "$GOC" "$REST" "$LOGS"
chown postgres: "$SOCK" "$PLAIN" "$LOGS"
# Private copy: a concurrent cargo build must not swap the binary mid-run.
cp "$PGCRYPTFS_SRC" "$PGCRYPTFS"
# gocryptfs is mounted by postgres with -allow_other (so root can read it back): needs this
if ! grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf; then
    echo user_allow_other >> /etc/fuse.conf
    FUSE_CONF_ADDED=1
fi
# ... and postgres must be able to open /dev/fuse (0666 on stock Debian; some VMs have 0600)
if ! runuser -u postgres -- test -r /dev/fuse -a -w /dev/fuse; then
    FUSE_DEV_MODE=$(stat -c %a /dev/fuse)
    chmod 0666 /dev/fuse
fi

# ---------------------------------------------------------------- helpers
pgc_pid() { # pid of the pgcryptfs daemon serving $1
    local pid
    pid=$(pgrep -f -- "pgcryptfs mount .* $1( |\$)" | head -n1 || true)
    [[ -n $pid ]] || pid=$(grep -o 'pgcryptfs\[[0-9]*\]' "$2" 2>/dev/null | tail -n1 | tr -dc 0-9 || true)
    echo "$pid"
}

# ---------------------------------------------------------------- header
{
echo "# pg_basebackup: plain vs pgcryptfs vs gocryptfs"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- $("$PGCRYPTFS" --version) ($(readlink -f "$PGCRYPTFS_SRC"), built $(date -u -r "$PGCRYPTFS_SRC" '+%Y-%m-%d %H:%M UTC'))"
echo "- gocryptfs: $(gocryptfs -version 2>&1 | head -n1)"
echo "- postgres: $("$PGBIN/postgres" --version)"
echo "- kernel: $(uname -r); nproc: $(nproc); loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
report_settings
} | tee "$OUT"

# ---------------------------------------------------------------- postgres
start_cluster

backup_setup

# ---------------------------------------------------------------- rounds
declare -a R_PLAIN R_PGC R_PGCU R_PGCT R_GOC R_GOCU R_PLAIN_RD R_PGC_RD R_GOC_RD R_RSS_W R_RSS_R
BKSIZE=?; STORESIZE=?; GOCSIZE=?

for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"

    # --- (a) plain directory
    prepare_backup
    timed PLAIN_BB - "${BB[@]}" -D "$PLAIN/backup"; R_PLAIN[r]=$PLAIN_BB
    BKSIZE=$(du_mib "$PLAIN/backup")
    rm -rf "$REST/backup"; drop_caches
    timed PLAIN_RD - cp -a "$PLAIN/backup" "$REST/backup"; R_PLAIN_RD[r]=$PLAIN_RD
    verify_restore "$REST/backup" "plain round $r" || exit 1
    rm -rf "$PLAIN/backup" "$REST/backup"; sync
    log "  plain: backup ${R_PLAIN[r]}s restore ${R_PLAIN_RD[r]}s"

    # --- (b) pgcryptfs
    V=$PGC/vault$r M=$PGC/mnt$r C=$PGC/cache$r
    LW=$LOGS/pgcryptfs-w$r.log LR=$LOGS/pgcryptfs-r$r.log
    mkdir -p "$M" "$C"
    "$PGCRYPTFS" init "$V" "${KEYOPTS[@]}" >&2
    "$PGCRYPTFS" mount "$V" "$M" "${KEYOPTS[@]}" --cache-dir "$C" --allow-other --log-file "$LW" >&2 \
        || { tail -n 40 "$LW" >&2; die "pgcryptfs mount failed"; }
    mkdir "$M/backup"; chown postgres: "$M/backup"
    prepare_backup
    timed PGC_BB "$LW" "${BB[@]}" -D "$M/backup"; R_PGC[r]=$PGC_BB
    PID_W=$(pgc_pid "$M" "$LW"); R_RSS_W[r]=$(hwm_mib "$PID_W")
    timed PGC_U "$LW" "$PGCRYPTFS" umount "$M"; R_PGCU[r]=$PGC_U
    R_PGCT[r]=$(awk -v a="$PGC_BB" -v b="$PGC_U" 'BEGIN { printf "%.2f", a + b }')
    mountpoint -q "$M" && { tail -n 40 "$LW" >&2; die "pgcryptfs umount returned but $M is still mounted"; }
    STORESIZE=$(du_mib "$V")
    "$PGCRYPTFS" mount "$V" "$M" "${KEYOPTS[@]}" --read-only --allow-other --log-file "$LR" >&2 \
        || { tail -n 40 "$LR" >&2; die "pgcryptfs read-only mount failed"; }
    drop_caches
    timed PGC_RD "$LR" cp -a "$M/backup" "$REST/backup"; R_PGC_RD[r]=$PGC_RD
    PID_R=$(pgc_pid "$M" "$LR"); R_RSS_R[r]=$(hwm_mib "$PID_R")
    timed DUMMY "$LR" "$PGCRYPTFS" umount "$M"
    verify_restore "$REST/backup" "pgcryptfs round $r" \
        || { echo "--- $LW ---" >&2; tail -n 40 "$LW" >&2; echo "--- $LR ---" >&2; tail -n 40 "$LR" >&2; exit 1; }
    rm -rf "$REST/backup" "$V" "$C"; sync
    log "  pgcryptfs: backup ${R_PGC[r]}s umount ${R_PGCU[r]}s restore ${R_PGC_RD[r]}s rss ${R_RSS_W[r]}/${R_RSS_R[r]} MiB (pids $PID_W/$PID_R)"
    if grep -vh ' INFO ' "$LW" "$LR" >&2; then echo "WARNING: pgcryptfs logged the non-INFO lines above (round $r)" >&2; PGC_WARNINGS=1; fi

    # --- (c) gocryptfs
    # Mounted by postgres, not root: Debian's gocryptfs 2.3 run as root with
    # -allow_other fails creates at random with EPERM (rfjakob/gocryptfs#892).
    G=$GOC/cipher$r M=$GOC/mnt$r
    mkdir -p "$G" "$M"; chown postgres: "$G" "$M"
    pg gocryptfs -q -init -extpass 'echo pw' "$G" >/dev/null
    pg gocryptfs -q -allow_other -extpass 'echo pw' "$G" "$M" >>"$LOGS/gocryptfs.log" 2>&1 \
        || { cat "$LOGS/gocryptfs.log" >&2; die "gocryptfs mount failed"; }
    mkdir "$M/backup"; chown postgres: "$M/backup"
    prepare_backup
    timed GOC_BB - "${BB[@]}" -D "$M/backup"; R_GOC[r]=$GOC_BB
    timed GOC_U - fusermount3 -u "$M"; R_GOCU[r]=$GOC_U
    GOCSIZE=$(du_mib "$G")
    pg gocryptfs -q -allow_other -extpass 'echo pw' "$G" "$M" >>"$LOGS/gocryptfs.log" 2>&1 \
        || { cat "$LOGS/gocryptfs.log" >&2; die "gocryptfs mount failed"; }
    drop_caches
    timed GOC_RD - cp -a "$M/backup" "$REST/backup"; R_GOC_RD[r]=$GOC_RD
    fusermount3 -u "$M"
    verify_restore "$REST/backup" "gocryptfs round $r" || exit 1
    rm -rf "$REST/backup" "$G"; sync
    log "  gocryptfs: backup ${R_GOC[r]}s umount ${R_GOCU[r]}s restore ${R_GOC_RD[r]}s"
done

# ---------------------------------------------------------------- report
col() { local -n a=$1; printf "%s\n" "${a[@]}"; }
ratios() { local -n a=$1 b=$2; local i; for ((i = 1; i <= ROUNDS; i++)); do ratio "${a[i]}" "${b[i]}"; echo; done; }
med() { median $("$@"); }

{
echo
echo "Database: $DBSIZE (pgbench -s $SCALE); backup size ${BKSIZE} MiB; pgcryptfs store ${STORESIZE} MiB; gocryptfs cipher dir ${GOCSIZE} MiB"
echo
echo "### Backup: pg_basebackup -Fp -X stream (with fsync), seconds"
echo
echo "| round | plain | pgcryptfs | pgcryptfs umount | pgcryptfs total | gocryptfs | gocryptfs umount | pgcryptfs/plain | pgcryptfs total/plain | gocryptfs/plain | pgcryptfs RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for ((i = 1; i <= ROUNDS; i++)); do
    echo "| $i | ${R_PLAIN[i]} | ${R_PGC[i]} | ${R_PGCU[i]} | ${R_PGCT[i]} | ${R_GOC[i]} | ${R_GOCU[i]} | $(ratio "${R_PGC[i]}" "${R_PLAIN[i]}") | $(ratio "${R_PGCT[i]}" "${R_PLAIN[i]}") | $(ratio "${R_GOC[i]}" "${R_PLAIN[i]}") | ${R_RSS_W[i]} |"
done
echo "| **median** | $(med col R_PLAIN) | $(med col R_PGC) | $(med col R_PGCU) | $(med col R_PGCT) | $(med col R_GOC) | $(med col R_GOCU) | $(med ratios R_PGC R_PLAIN) | $(med ratios R_PGCT R_PLAIN) | $(med ratios R_GOC R_PLAIN) | $(FMT=%.0f med col R_RSS_W) |"
echo
echo "### Restore read: cp -a MNT/backup DEST after remount + drop_caches, seconds"
echo
echo "| round | plain | pgcryptfs (ro, no cache) | gocryptfs | pgcryptfs/plain | gocryptfs/plain | pgcryptfs RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for ((i = 1; i <= ROUNDS; i++)); do
    echo "| $i | ${R_PLAIN_RD[i]} | ${R_PGC_RD[i]} | ${R_GOC_RD[i]} | $(ratio "${R_PGC_RD[i]}" "${R_PLAIN_RD[i]}") | $(ratio "${R_GOC_RD[i]}" "${R_PLAIN_RD[i]}") | ${R_RSS_R[i]} |"
done
echo "| **median** | $(med col R_PLAIN_RD) | $(med col R_PGC_RD) | $(med col R_GOC_RD) | $(med ratios R_PGC_RD R_PLAIN_RD) | $(med ratios R_GOC_RD R_PLAIN_RD) | $(FMT=%.0f med col R_RSS_R) |"
echo
echo "Ratios are per round (lower is better); the median row's ratios are medians of the per-round ratios."
echo "RSS is the daemon's VmHWM sampled just before umount (backup mount / read-only restore mount)."
echo "Every restored copy was checked with pg_verifybackup."
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT"
