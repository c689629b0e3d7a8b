#!/usr/bin/env bash
# pg_basebackup into pgcryptfs with a local store, pgcryptfs with an S3 store, and an
# `rclone mount` of a crypt remote over the same S3 endpoint: time until the data is in
# the store, peak RSS of the FUSE daemon, objects stored, and the restore read from each.
# Run as root.  See README.md.
set -euo pipefail

SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/var/tmp/pgcryptfs-s3-bench}
OUT=${OUT:-/tmp/pgcryptfs-s3-bench.md}
TIMEOUT=${TIMEOUT:-3600}          # per timed step, seconds
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGCRYPTFS_SRC=${PGCRYPTFS:-$HERE/../target/release/pgcryptfs}
ENDPOINT_SRC=${S3_ENDPOINT:-$HERE/../target/release/examples/s3_endpoint}
# shellcheck source=lib.sh
source "$HERE/lib.sh"

check_prerequisites
[[ -x $ENDPOINT_SRC ]] || die "S3 endpoint not found at $ENDPOINT_SRC: cargo build --release --example s3_endpoint (or set S3_ENDPOINT=)"
install_missing rclone:rclone fusermount3:fuse3

# ---------------------------------------------------------------- layout
BIN=$WORK/bin; PGDATA=$WORK/pgdata; SOCK=$WORK/sock; LOGS=$WORK/logs; REST=$WORK/restore
S3ROOT=$WORK/s3; PGC=$WORK/pgc; RCL=$WORK/rclone
PG_STARTED=0
WARNINGS=0
PGCRYPTFS=$BIN/pgcryptfs
ENDPOINT_PID=
RCLONE_PID=
WATCH_PID=
AK=bench-ak SK=bench-sk$RANDOM$RANDOM
BUCKET=backups

alive() { [[ -e /proc/$1 ]] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }
wait_exit() { # pid seconds: waits for a child to exit (and reaps it); 1 if it is still running
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$1" || { wait "$1" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    return 1
}
stop_pid() { # pid: TERM, then KILL after 10 s
    [[ -n $1 ]] && alive "$1" || return 0
    kill "$1" 2>/dev/null; wait_exit "$1" 10 && return 0
    kill -9 "$1" 2>/dev/null; wait_exit "$1" 5 || true
}
abort_fuse() { # mountpoint: the last resort for a hung FUSE mount
    mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null
    local dev c
    dev=$(awk -v m="$1" '$5 == m { print $3 }' /proc/self/mountinfo | head -n1)
    for c in /sys/fs/fuse/connections/*; do
        [[ -n $dev && $(basename "$c") == "${dev#*:}" ]] && echo 1 > "$c/abort"
    done
    umount -l "$1"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    log "cleanup"
    [[ -n $WATCH_PID ]] && kill "$WATCH_PID" 2>/dev/null
    if ((PG_STARTED)); then timeout 120 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1; fi
    local m
    for m in $(mounts_under); do
        case $m in
            "$PGC"/*) timeout 300 "$PGCRYPTFS" umount "$m" >&2 || timeout 10 fusermount3 -u "$m" || abort_fuse "$m" ;;
            *)        timeout 10 fusermount3 -u "$m" || timeout 10 umount "$m" || abort_fuse "$m" ;;
        esac
    done
    stop_pid "$RCLONE_PID"
    stop_pid "$ENDPOINT_PID"
    finish_work pgcryptfs-s3-bench "$rc" "$WARNINGS"
    exit $rc
}
make_work
mkdir -p "$BIN" "$SOCK" "$LOGS" "$REST" "$S3ROOT" "$PGC" "$RCL"
chown postgres: "$SOCK" "$LOGS"
# Private copies: a concurrent cargo build must not swap the binaries mid-run.
cp "$PGCRYPTFS_SRC" "$PGCRYPTFS"
cp "$ENDPOINT_SRC" "$BIN/s3_endpoint"

# ---------------------------------------------------------------- helpers
free_port() { # first port from $1 on that nothing listens on
    local p
    for p in $(seq "$1" $(($1 + 200))); do
        port_unused "$p" && { echo "$p"; return; }
    done
    die "no free port from $1"
}
pgc_pid() { grep -o 'pgcryptfs\[[0-9]*\]' "$1" 2>/dev/null | tail -n1 | tr -dc 0-9 || true; } # from its log
# Records, every 0.2 s until pid $1 exits, its VmHWM (the kernel's peak RSS: the last value
# is the peak) and the largest RssAnon seen (heap and stacks, without file pages the
# process maps, such as packs mmap'ed for upload) into file $2 as "KiB KiB".
# Runs in the background, sets WATCH_PID.
watch_hwm() {
    : > "$2"
    ( max=0
      while s=$(awk '/^VmHWM:/ { h = $2 } /^RssAnon:/ { a = $2 } END { if (h != "") print h, a + 0 }' "/proc/$1/status" 2>/dev/null) \
            && [[ -n $s ]]; do
          read -r h a <<<"$s"; ((a > max)) && max=$a
          echo "$h $max" > "$2.tmp" && mv "$2.tmp" "$2"; sleep 0.2
      done ) &
    WATCH_PID=$!
}
end_watch() { # file var-hwm var-anon: stops the watcher, sets both peaks in MiB
    if [[ -n $WATCH_PID ]]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi
    WATCH_PID=
    local h a
    read -r h a < "$1" 2>/dev/null || true
    printf -v "$2" '%s' "$( [[ -n $h ]] && awk -v k="$h" 'BEGIN { printf "%.0f", k / 1024 }' || echo '?')"
    printf -v "$3" '%s' "$( [[ -n $a ]] && awk -v k="$a" 'BEGIN { printf "%.0f", k / 1024 }' || echo '?')"
}
files_in() { find "$1" -type f | wc -l; }
mib_in() { du -sm --apparent-size "$1" | awk '{ print $1 }'; }
sum2() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
check_log() { # label logs...: counts non-INFO lines of a pgcryptfs log as warnings
    local l=$1; shift
    if grep -vh ' INFO ' "$@" >&2; then echo "WARNING: pgcryptfs logged the non-INFO lines above ($l)" >&2; WARNINGS=1; fi
}

# ---------------------------------------------------------------- S3 endpoint
EPORT=$(free_port 57000)
log "S3 endpoint (s3s-fs) on 127.0.0.1:$EPORT"
"$BIN/s3_endpoint" --root "$S3ROOT" --port "$EPORT" --access-key "$AK" --secret-key "$SK" --bucket "$BUCKET" \
    >"$LOGS/endpoint.log" 2>&1 &
ENDPOINT_PID=$!
for ((i = 0; i < 100; i++)); do grep -qs '^listening on' "$LOGS/endpoint.log" && break; alive "$ENDPOINT_PID" || break; sleep 0.1; done
grep -qs '^listening on' "$LOGS/endpoint.log" || { cat "$LOGS/endpoint.log" >&2; die "S3 endpoint did not start"; }
export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK
S3OPTS=(--store-opt "endpoint=http://127.0.0.1:$EPORT" --store-opt allow_http=true
        --store-opt path_style=true --store-opt region=us-east-1)

# rclone: an s3 remote on the same endpoint, and per round a crypt remote over a bucket of
# its own (s3s-fs answers a HEAD of a "directory" key with 500, which rclone retries for
# ~40 s when a crypt remote points below a bucket; a bucket root avoids that HEAD).
RCONF=$WORK/rclone.conf
{
    printf '[s3]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:%s\n' "$EPORT"
    printf 'access_key_id = %s\nsecret_access_key = %s\nregion = us-east-1\nforce_path_style = true\n' "$AK" "$SK"
    for ((r = 1; r <= ROUNDS; r++)); do
        printf '\n[crypt%s]\ntype = crypt\nremote = s3:rclone-r%s\npassword = %s\npassword2 = %s\n' "$r" "$r" \
            "$(rclone obscure "$(head -c 24 /dev/urandom | base64)")" "$(rclone obscure "$(head -c 24 /dev/urandom | base64)")"
    done
} > "$RCONF"
chmod 600 "$RCONF"
# AWS_CA_BUNDLE (set on some hosts) makes rclone's AWS SDK refuse its own HTTP transport.
rcl() { timeout 600 env -u AWS_CA_BUNDLE RCLONE_CONFIG="$RCONF" rclone "$@"; }
RCPORT=$(free_port 57300)
PG_UID=$(id -u postgres) PG_GID=$(id -g postgres)

start_rclone() { # remote mountpoint cachedir logfile extra...: mounts in the background, sets RCLONE_PID
    local remote=$1 mnt=$2 cache=$3 lf=$4; shift 4
    env -u AWS_CA_BUNDLE RCLONE_CONFIG="$RCONF" rclone mount "$remote" "$mnt" --vfs-cache-mode writes \
        --cache-dir "$cache" --allow-other --uid "$PG_UID" --gid "$PG_GID" \
        --rc --rc-addr "127.0.0.1:$RCPORT" --rc-no-auth --log-file "$lf" -v "$@" &
    RCLONE_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$mnt" && return 0
        alive "$RCLONE_PID" || break
        sleep 0.1
    done
    tail -n 40 "$lf" >&2; die "rclone mount of $remote failed"
}
stop_rclone() { # mountpoint logfile: unmounts and waits for the rclone process to exit
    timeout 60 fusermount3 -u "$1" || { tail -n 40 "$2" >&2; die "fusermount3 -u $1 failed"; }
    wait_exit "$RCLONE_PID" 120 || { tail -n 40 "$2" >&2; die "rclone did not exit after unmount"; }
    RCLONE_PID=
}
# rclone (1.60) does not wait for queued VFS uploads when it is unmounted: it leaves them in
# the cache for its next start. So: poll vfs/stats until nothing is queued or uploading
# (three polls in a row, so that a FUSE release still in flight gets queued), then unmount.
wait_rclone_uploads() { # logfile
    local zero=0 t0 s q u
    t0=$(date +%s)
    while ((zero < 3)); do
        (($(date +%s) - t0 < TIMEOUT)) || { tail -n 40 "$1" >&2; die "rclone uploads not done after ${TIMEOUT}s"; }
        s=$(rcl rc --rc-addr "127.0.0.1:$RCPORT" vfs/stats) || { tail -n 40 "$1" >&2; die "rclone rc vfs/stats failed"; }
        q=$(sed -n 's/.*"uploadsQueued": *\([0-9]*\).*/\1/p' <<<"$s")
        u=$(sed -n 's/.*"uploadsInProgress": *\([0-9]*\).*/\1/p' <<<"$s")
        [[ -n $q && -n $u ]] || die "unexpected vfs/stats output: $s"
        if ((q + u == 0)); then zero=$((zero + 1)); else zero=0; fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------- header
{
echo "# pg_basebackup to S3: pgcryptfs (local store, S3 store) vs rclone mount + crypt"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- source: $(git -C "$HERE/.." log -1 --format='%h %s' 2>/dev/null | cut -c1-80)$(git -C "$HERE/.." diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
echo "- $("$PGCRYPTFS" --version) ($(readlink -f "$PGCRYPTFS_SRC"), built $(date -u -r "$PGCRYPTFS_SRC" '+%Y-%m-%d %H:%M UTC'))"
echo "- rclone: $(rclone version 2>/dev/null | head -n1)"
echo "- S3 endpoint: examples/s3_endpoint (s3s-fs 0.14.1) on 127.0.0.1, objects as files on the same disk"
echo "- postgres: $("$PGBIN/postgres" --version)"
echo "- kernel: $(uname -r); nproc: $(nproc); uptime at start: $(uptime)"
report_settings
} | tee "$OUT"

# ---------------------------------------------------------------- postgres
start_cluster

backup_setup
# Restore copy, the same for every variant. Not `cp -a`: rclone (1.60) answers listxattr and
# getxattr on files with EIO, and cp -a (and --preserve=mode, through the ACL) fails on that.
CP=(cp -R --preserve=ownership,timestamps)

# ---------------------------------------------------------------- rounds
# Per variant V in L (pgcryptfs local store), S (pgcryptfs S3), R (rclone):
# BB backup, UP drain/upload, TOT total, RSS/RSSR peak RSS backup/restore, ANON/ANONR peak
# anonymous RSS backup/restore, OBJ objects stored,
# PUT objects pgcryptfs says it wrote, RD restore read.
declare -a L_BB L_UP L_TOT L_RSS L_RSSR L_ANON L_ANONR L_OBJ L_PUT L_RD \
           S_BB S_UP S_TOT S_RSS S_RSSR S_ANON S_ANONR S_OBJ S_PUT S_RD \
           R_BB R_UP R_TOT R_RSS R_RSSR R_ANON R_ANONR R_OBJ R_RD
BKSIZE=?; BKFILES=?; L_MIB=?; S_MIB=?; R_MIB=?

pgc_round() { # L|S store r objdir: one pgcryptfs backup + restore; fills ${v}_*[r]
    local v=$1 store=$2 r=$3 objdir=$4
    local M=$PGC/mnt-$v$r C=$PGC/cache-$v$r CR=$PGC/rcache-$v$r
    local LW=$LOGS/pgcryptfs-$v-w$r.log LR=$LOGS/pgcryptfs-$v-r$r.log
    local sopts=() t pid
    [[ $v == S ]] && sopts=("${S3OPTS[@]}")
    mkdir -p "$M" "$C" "$CR"
    "$PGCRYPTFS" init "$store" "${sopts[@]}" "${KEYOPTS[@]}" >&2
    timeout 120 "$PGCRYPTFS" mount "$store" "$M" "${sopts[@]}" "${KEYOPTS[@]}" --cache-dir "$C" --allow-other --log-file "$LW" >&2 \
        || { tail -n 40 "$LW" >&2; die "pgcryptfs mount ($v) failed"; }
    pid=$(pgc_pid "$LW"); [[ -n $pid ]] || die "no daemon pid in $LW"
    watch_hwm "$pid" "$LOGS/hwm"
    mkdir "$M/backup"; chown postgres: "$M/backup"
    prepare_backup
    timed t "$LW" "${BB[@]}" -D "$M/backup"; eval "${v}_BB[r]=\$t"
    timed t "$LW" "$PGCRYPTFS" umount "$M"; eval "${v}_UP[r]=\$t"
    wait_exit "$pid" 30 || true
    end_watch "$LOGS/hwm" "${v}_RSS[r]" "${v}_ANON[r]"
    eval "${v}_TOT[r]=\$(sum2 \"\${${v}_BB[r]}\" \"\${${v}_UP[r]}\")"
    mountpoint -q "$M" && { tail -n 40 "$LW" >&2; die "pgcryptfs umount returned but $M is still mounted"; }
    eval "${v}_PUT[r]=\$(grep -o '([0-9]* objects written' \"\$LW\" | tail -n1 | tr -dc 0-9)"
    eval "${v}_OBJ[r]=\$(files_in \"\$objdir\")"
    eval "${v}_MIB=\$(mib_in \"\$objdir\")"
    # restore: read-only remount with an empty cache, cold page cache
    timeout 120 "$PGCRYPTFS" mount "$store" "$M" "${sopts[@]}" "${KEYOPTS[@]}" --cache-dir "$CR" --read-only --allow-other --log-file "$LR" >&2 \
        || { tail -n 40 "$LR" >&2; die "pgcryptfs read-only mount ($v) failed"; }
    pid=$(pgc_pid "$LR"); [[ -n $pid ]] || die "no daemon pid in $LR"
    watch_hwm "$pid" "$LOGS/hwm"
    drop_caches
    timed t "$LR" "${CP[@]}" "$M/backup" "$REST/backup"; eval "${v}_RD[r]=\$t"
    timed DUMMY "$LR" "$PGCRYPTFS" umount "$M"
    wait_exit "$pid" 30 || true
    end_watch "$LOGS/hwm" "${v}_RSSR[r]" "${v}_ANONR[r]"
    verify_restore "$REST/backup" "pgcryptfs $v round $r" \
        || { echo "--- $LW ---" >&2; tail -n 40 "$LW" >&2; echo "--- $LR ---" >&2; tail -n 40 "$LR" >&2; exit 1; }
    BKSIZE=$(du_mib "$REST/backup"); BKFILES=$(files_in "$REST/backup")
    rm -rf "$REST/backup" "$C" "$CR"; sync
    check_log "$v round $r" "$LW" "$LR"
    log "  pgcryptfs $v: backup $(eval echo "\${${v}_BB[r]}")s umount $(eval echo "\${${v}_UP[r]}")s restore $(eval echo "\${${v}_RD[r]}")s rss $(eval echo "\${${v}_RSS[r]}/\${${v}_RSSR[r]}") MiB (anon $(eval echo "\${${v}_ANON[r]}/\${${v}_ANONR[r]}")) objects $(eval echo "\${${v}_OBJ[r]}")"
}

for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS ($(cut -d' ' -f1-3 /proc/loadavg))"

    # --- (a) pgcryptfs, local store
    pgc_round L "$PGC/vault$r" "$r" "$PGC/vault$r"
    rm -rf "$PGC/vault$r"

    # --- (b) pgcryptfs, S3 store
    pgc_round S "s3://$BUCKET/pgc-r$r" "$r" "$S3ROOT/$BUCKET/pgc-r$r"
    rm -rf "${S3ROOT:?}/$BUCKET/pgc-r$r"

    # --- (c) rclone mount of a crypt remote over S3
    M=$RCL/mnt$r C=$RCL/cache$r CR=$RCL/rcache$r LW=$LOGS/rclone-w$r.log LR=$LOGS/rclone-r$r.log
    mkdir -p "$M" "$C" "$CR"
    rcl mkdir "s3:rclone-r$r"
    start_rclone "crypt$r:" "$M" "$C" "$LW" --vfs-write-back 0s
    watch_hwm "$RCLONE_PID" "$LOGS/hwm"
    prepare_backup
    timed t "$LW" "${BB[@]}" -D "$M/backup"; R_BB[r]=$t
    t0=$(now)
    wait_rclone_uploads "$LW"
    stop_rclone "$M" "$LW"
    R_UP[r]=$(elapsed "$t0" "$(now)")
    end_watch "$LOGS/hwm" "R_RSS[r]" "R_ANON[r]"
    R_TOT[r]=$(sum2 "${R_BB[r]}" "${R_UP[r]}")
    R_OBJ[r]=$(files_in "$S3ROOT/rclone-r$r"); R_MIB=$(mib_in "$S3ROOT/rclone-r$r")
    start_rclone "crypt$r:" "$M" "$CR" "$LR" --read-only
    watch_hwm "$RCLONE_PID" "$LOGS/hwm"
    drop_caches
    timed t "$LR" "${CP[@]}" "$M/backup" "$REST/backup"; R_RD[r]=$t
    stop_rclone "$M" "$LR"
    end_watch "$LOGS/hwm" "R_RSSR[r]" "R_ANONR[r]"
    verify_restore "$REST/backup" "rclone round $r" || { tail -n 40 "$LW" >&2; exit 1; }
    n=$(files_in "$REST/backup")
    if ((n != R_OBJ[r])); then echo "WARNING: rclone stored ${R_OBJ[r]} objects for $n files" >&2; WARNINGS=1; fi
    if grep -h -E 'ERROR|Failed' "$LW" "$LR" >&2; then echo "WARNING: rclone logged the errors above (round $r)" >&2; WARNINGS=1; fi
    rm -rf "$REST/backup" "$C" "$CR" "${S3ROOT:?}/rclone-r$r"; sync
    log "  rclone: backup ${R_BB[r]}s upload ${R_UP[r]}s restore ${R_RD[r]}s rss ${R_RSS[r]}/${R_RSSR[r]} MiB (anon ${R_ANON[r]}/${R_ANONR[r]}) objects ${R_OBJ[r]}"
done

# ---------------------------------------------------------------- report
col() { local -n a=$1; printf "%s\n" "${a[@]}"; }
ratios() { local -n a=$1 b=$2; local i; for ((i = 1; i <= ROUNDS; i++)); do ratio "${a[i]}" "${b[i]}"; echo; done; }
med() { median $("$@"); }

{
echo
echo "Database: $DBSIZE (pgbench -s $SCALE); backup ${BKSIZE} MiB in ${BKFILES} files; stored: pgcryptfs local ${L_MIB} MiB, pgcryptfs S3 ${S_MIB} MiB, rclone crypt ${R_MIB} MiB"
echo
echo "### Medians of $ROUNDS rounds (ratios: median of the per-round ratios to pgcryptfs with a local store)"
echo
echo "| variant | pg_basebackup s | drain / upload s | total s (data in store) | total / local | peak RSS (anon) backup MiB | objects stored | restore read s | restore / local | peak RSS (anon) restore MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
echo "| pgcryptfs, local store | $(med col L_BB) | $(med col L_UP) | $(med col L_TOT) | 1.00 | $(FMT=%.0f med col L_RSS) ($(FMT=%.0f med col L_ANON)) | $(FMT=%.0f med col L_OBJ) | $(med col L_RD) | 1.00 | $(FMT=%.0f med col L_RSSR) ($(FMT=%.0f med col L_ANONR)) |"
echo "| pgcryptfs, S3 | $(med col S_BB) | $(med col S_UP) | $(med col S_TOT) | $(med ratios S_TOT L_TOT) | $(FMT=%.0f med col S_RSS) ($(FMT=%.0f med col S_ANON)) | $(FMT=%.0f med col S_OBJ) | $(med col S_RD) | $(med ratios S_RD L_RD) | $(FMT=%.0f med col S_RSSR) ($(FMT=%.0f med col S_ANONR)) |"
echo "| rclone mount + crypt, S3 | $(med col R_BB) | $(med col R_UP) | $(med col R_TOT) | $(med ratios R_TOT L_TOT) | $(FMT=%.0f med col R_RSS) ($(FMT=%.0f med col R_ANON)) | $(FMT=%.0f med col R_OBJ) | $(med col R_RD) | $(med ratios R_RD L_RD) | $(FMT=%.0f med col R_RSSR) ($(FMT=%.0f med col R_ANONR)) |"
echo
echo "rclone / pgcryptfs S3: total $(med ratios R_TOT S_TOT)×, restore $(med ratios R_RD S_RD)× (medians of per-round ratios)."
echo "Objects pgcryptfs reported writing (PUTs of packs and metadata): local $(FMT=%.0f med col L_PUT), S3 $(FMT=%.0f med col S_PUT)."
echo
echo "### Per round, seconds (backup + drain = total; restore) and peak RSS MiB (backup/restore, anon in parentheses)"
echo
echo "| round | pgc local | pgc S3 | rclone | pgc local restore | pgc S3 restore | rclone restore | RSS pgc local | RSS pgc S3 | RSS rclone | objects pgc S3 / rclone |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for ((i = 1; i <= ROUNDS; i++)); do
    echo "| $i | ${L_BB[i]} + ${L_UP[i]} = ${L_TOT[i]} | ${S_BB[i]} + ${S_UP[i]} = ${S_TOT[i]} | ${R_BB[i]} + ${R_UP[i]} = ${R_TOT[i]} | ${L_RD[i]} | ${S_RD[i]} | ${R_RD[i]} | ${L_RSS[i]}/${L_RSSR[i]} (${L_ANON[i]}/${L_ANONR[i]}) | ${S_RSS[i]}/${S_RSSR[i]} (${S_ANON[i]}/${S_ANONR[i]}) | ${R_RSS[i]}/${R_RSSR[i]} (${R_ANON[i]}/${R_ANONR[i]}) | ${S_OBJ[i]} / ${R_OBJ[i]} |"
done
echo
echo "Drain: \`pgcryptfs umount\` (returns once everything is in the store); rclone: polling \`vfs/stats\`"
echo "until no upload is queued or running, then \`fusermount3 -u\` and the process's exit."
echo "RSS: the daemon's VmHWM (peak resident set, including file pages it maps), read every 0.2 s until"
echo "it exited; anon: the largest RssAnon (heap, stacks) seen in those samples. Restore: read-only remount"
echo "with an empty cache, drop_caches, \`${CP[*]}\`; every restored copy passed pg_verifybackup."
echo "uptime at end: $(uptime)"
} | tee -a "$OUT"
