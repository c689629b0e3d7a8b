#!/usr/bin/env bash
# How the daemon's cost grows with the vault: write SIZES (GiB, cumulative) in 1 GiB files into
# one writable mount, recording after each step the daemon's resident memory (VmRSS, VmHWM),
# the metadata the store holds (meta/ bytes) and the time of a `pgcryptfs sync`; then unmount
# and measure a read-only remount from an empty cache (time to mounted, VmRSS, VmHWM after
# `stat` of every file). Then FILES empty files in 1,000 directories, the same way. The data
# is zeros with a counter per MiB: compressed to almost nothing, so the store stays small and
# what is measured is the metadata's cost (per chunk and per file), not the disk's. Run as
# root; see README.md.
set -euo pipefail

SIZES=${SIZES:-1 4 16}
FILES=${FILES:-100000}
WORK=${WORK:-/var/tmp/pgcryptfs-scale}
OUT=${OUT:-/tmp/pgcryptfs-scale.md}
TIMEOUT=${TIMEOUT:-7200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGCRYPTFS_SRC=${PGCRYPTFS:-$HERE/../target/release/pgcryptfs}
# shellcheck source=lib.sh
source "$HERE/lib.sh"

[[ $(id -u) -eq 0 ]] || die "run as root"
[[ -x $PGCRYPTFS_SRC ]] || die "pgcryptfs binary not found at $PGCRYPTFS_SRC (set PGCRYPTFS=)"
[[ $WORK == /*/* ]] || die "WORK must be an absolute path below /"
BIN=$WORK/bin; LOGS=$WORK/logs; PGCRYPTFS=$BIN/pgcryptfs
cleanup() {
    local rc=$?
    set +e
    local m
    for m in $(mounts_under); do timeout 600 "$PGCRYPTFS" umount "$m" >&2 || fusermount3 -u -z "$m"; done
    ((rc)) && [[ -d $LOGS ]] && cp -a "$LOGS" "/tmp/pgcryptfs-scale-logs.$(date +%s)"
    [[ -z $(mounts_under) ]] && rm -rf --one-file-system "$WORK"
    exit $rc
}
[[ -e $WORK ]] && die "$WORK exists; remove it (or set WORK=) first"
mkdir -p "$BIN" "$LOGS"
trap cleanup EXIT
trap 'exit 130' INT TERM
cp "$PGCRYPTFS_SRC" "$PGCRYPTFS"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/key"; chmod 600 "$WORK/key"
KEYOPTS=(--key-file "$WORK/key" --key-transform hex)

pid_of() { pgrep -f -- "pgcryptfs mount .* $1( |\$)" | head -n1; }
rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
meta_kib() { du -sk "$1/meta" | awk '{ print $1 }'; }

# A file of $2 MiB: each MiB is zeros but for its number (so no two chunks are equal).
fill() { python3 -c '
import sys, os
n = int(sys.argv[2]); mib = bytearray(1 << 20)
with open(sys.argv[1], "wb", buffering=0) as f:
    for i in range(n):
        mib[:16] = i.to_bytes(8, "little") + os.urandom(8)
        f.write(mib)
' "$1" "$2"; }
command -v python3 >/dev/null || die "python3 is needed to write the data"

# ---------------------------------------------------------------- data
V=$WORK/vault M=$WORK/mnt C=$WORK/cache
mkdir -p "$M" "$C"
"$PGCRYPTFS" init "$V" "${KEYOPTS[@]}" >/dev/null 2>&1
{
echo "# Scale: daemon memory and metadata against vault size"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $("$PGCRYPTFS" --version); kernel $(uname -r); nproc $(nproc)"
echo "- data: 1 GiB files of zeros with a per-MiB counter (compressible: the store stays small)"
echo
echo "| written (GiB) | chunks | writer VmRSS after sync (MiB) | writer VmHWM (MiB) | sync (s) | meta/ in store (KiB) | RO remount (s) | RO VmRSS (MiB) | RO VmHWM (MiB) |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} | tee "$OUT"
"$PGCRYPTFS" mount "$V" "$M" "${KEYOPTS[@]}" --cache-dir "$C" --log-file "$LOGS/w.log" >&2
W=$(pid_of "$M")
done_gib=0
for target in $SIZES; do
    while ((done_gib < target)); do
        done_gib=$((done_gib + 1))
        fill "$M/f$done_gib" 1024
    done
    t0=$(now); timeout "$TIMEOUT" "$PGCRYPTFS" sync "$M" >/dev/null; t1=$(now)
    w_rss=$(rss_mib "$W"); w_hwm=$(hwm_mib "$W")
    # A read-only mount of the same vault (alongside the writer), from an empty cache.
    R=$WORK/ro$target; mkdir -p "$R"
    r0=$(now)
    "$PGCRYPTFS" mount "$V" "$R" "${KEYOPTS[@]}" --read-only --cache-dir "$WORK/rocache$target" --log-file "$LOGS/r$target.log" >&2
    r1=$(now)
    RP=$(pid_of "$R")
    find "$R" -type f -exec stat -c %s {} + >/dev/null
    r_rss=$(rss_mib "$RP"); r_hwm=$(hwm_mib "$RP")
    "$PGCRYPTFS" umount "$R" >&2
    echo "| $target | $((target * 16384)) | $w_rss | $w_hwm | $(elapsed "$t0" "$t1") | $(meta_kib "$V") | $(elapsed "$r0" "$r1") | $r_rss | $r_hwm |" | tee -a "$OUT"
done
"$PGCRYPTFS" umount "$M" >&2

# ---------------------------------------------------------------- files
if ((FILES > 0)); then
    V2=$WORK/vault2 M2=$WORK/mnt2 C2=$WORK/cache2
    mkdir -p "$M2" "$C2"
    "$PGCRYPTFS" init "$V2" "${KEYOPTS[@]}" >/dev/null 2>&1
    "$PGCRYPTFS" mount "$V2" "$M2" "${KEYOPTS[@]}" --cache-dir "$C2" --log-file "$LOGS/w2.log" >&2
    W2=$(pid_of "$M2")
    per=$(( (FILES + 999) / 1000 ))
    c0=$(now)
    for ((d = 0; d < 1000; d++)); do
        mkdir "$M2/d$d"
        (cd "$M2/d$d" && seq -f "f%g" 1 "$per" | xargs touch)
    done
    t0=$(now); "$PGCRYPTFS" sync "$M2" >/dev/null; t1=$(now)
    w_rss=$(rss_mib "$W2"); w_hwm=$(hwm_mib "$W2")
    "$PGCRYPTFS" umount "$M2" >&2
    R=$WORK/ro-files; mkdir -p "$R"
    r0=$(now)
    "$PGCRYPTFS" mount "$V2" "$R" "${KEYOPTS[@]}" --read-only --cache-dir "$WORK/rocache-files" --log-file "$LOGS/r-files.log" >&2
    r1=$(now)
    RP=$(pid_of "$R")
    find "$R" -type f | wc -l > "$LOGS/count"
    r_rss=$(rss_mib "$RP"); r_hwm=$(hwm_mib "$RP")
    "$PGCRYPTFS" umount "$R" >&2
    {
    echo
    echo "| files | create (s) | writer VmRSS after sync (MiB) | writer VmHWM (MiB) | sync (s) | meta/ in store (KiB) | RO remount (s) | RO VmRSS (MiB) | RO VmHWM (MiB) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    echo "| $(cat "$LOGS/count") | $(elapsed "$c0" "$t0") | $w_rss | $w_hwm | $(elapsed "$t0" "$t1") | $(meta_kib "$V2") | $(elapsed "$r0" "$r1") | $r_rss | $r_hwm |"
    } | tee -a "$OUT"
fi
