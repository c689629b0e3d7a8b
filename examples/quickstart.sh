#!/usr/bin/env bash
# Quickstart: build pgcryptfs, create a key and a local vault, mount it, back up a throwaway
# PostgreSQL cluster into it with pg_basebackup, unmount (everything goes to the store),
# remount read-only with an empty cache and run pg_verifybackup on the backup inside the mount.
# Run as root on Debian/Ubuntu:  sudo ./examples/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "run as root (FUSE mounts need /dev/fuse)" >&2; exit 1; }
# Everything needed to build and run it (compilers, OpenSSL and libclang for sequoia-openpgp,
# fuse3, PostgreSQL): installs only what is missing.
scripts/install-deps.sh
PGCFS=$(scripts/build-release.sh)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

WORK=$(mktemp -d /var/tmp/pgcryptfs-quickstart.XXXXXX)
chmod 755 "$WORK"
MNT=$WORK/mnt
cleanup() {
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pgdata" -m fast stop >/dev/null 2>&1 || true
    "$PGCFS" umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT" "$WORK/sock"

echo "== 1. a key (32 random bytes, hex) and a vault in $WORK/vault"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/key"
chmod 600 "$WORK/key"
"$PGCFS" init "$WORK/vault" --key-file "$WORK/key" --key-transform hex

echo "== 2. mount it (returns once serving)"
"$PGCFS" mount "$WORK/vault" "$MNT" --key-file "$WORK/key" --key-transform hex \
    --cache-dir "$WORK/cache" --allow-other --log-file "$WORK/pgcryptfs.log"
mkdir "$MNT/base" && chown postgres: "$MNT/base"

echo "== 3. a throwaway PostgreSQL cluster with pgbench data"
chown postgres: "$WORK" "$WORK/sock"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pgdata" -U postgres --auth=trust >/dev/null
# No TCP at all (listen_addresses=''): the port only names the socket in the private $WORK/sock.
PORT=5432
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pg.log" -w \
    -o "-p $PORT -k $WORK/sock -c listen_addresses=''" start >/dev/null
runuser -u postgres -- "$PGBIN/pgbench" -h "$WORK/sock" -p "$PORT" -i -s 10 -q postgres

echo "== 4. pg_basebackup straight into the encrypted mount"
time runuser -u postgres -- "$PGBIN/pg_basebackup" -h "$WORK/sock" -p "$PORT" \
    -D "$MNT/base/backup" -Fp -X stream -c fast

echo "== 5. unmount: drains everything to the store"
"$PGCFS" umount "$MNT"
echo "store: $(du -sh "$WORK/vault" | cut -f1) of ciphertext in $(find "$WORK/vault" -type f | wc -l) objects"

echo "== 6. remount read-only with an empty cache and verify the backup inside the mount"
rm -rf "$WORK/cache"
"$PGCFS" mount "$WORK/vault" "$MNT" --key-file "$WORK/key" --key-transform hex \
    --read-only --allow-other --log-file "$WORK/pgcryptfs.log"
runuser -u postgres -- "$PGBIN/pg_verifybackup" "$MNT/base/backup"
"$PGCFS" umount "$MNT"
echo "== done: the backup verified after a round trip through the encrypted store"
