#!/usr/bin/env bash
# Installs pgcryptfs where mount(8) and umount(8) find it:
#   $PREFIX/bin/pgcryptfs
#   /sbin/mount.pgcryptfs, /sbin/mount.fuse.pgcryptfs  -> the binary (mount -t pgcryptfs, fstab)
#   /sbin/umount.fuse.pgcryptfs                        -> the binary (umount drains to the store)
# and the example systemd units under $PREFIX/share/pgcryptfs/systemd/.
#
# Usage: sudo mount-helpers/install.sh [--prefix /usr/local] [--binary PATH] [--uninstall]
# Without --binary it builds the release binary with cargo first and takes it from cargo's
# target directory, wherever that is (CARGO_TARGET_DIR, a cargo config's build.target-dir).
set -euo pipefail

PREFIX=/usr/local
BINARY=
UNINSTALL=0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SBIN=${SBIN:-/sbin}

while (($#)); do
    case $1 in
        --prefix) PREFIX=$2; shift 2 ;;
        --binary) BINARY=$2; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

[[ $(id -u) -eq 0 ]] || { echo "install.sh: run as root" >&2; exit 1; }
LINKS=("$SBIN/mount.pgcryptfs" "$SBIN/mount.fuse.pgcryptfs" "$SBIN/umount.fuse.pgcryptfs")

if ((UNINSTALL)); then
    for l in "${LINKS[@]}"; do
        if [[ -L $l && $(readlink "$l") == "$PREFIX/bin/pgcryptfs" ]]; then rm -f "$l"; fi
    done
    rm -f "$PREFIX/bin/pgcryptfs"
    rm -rf "$PREFIX/share/pgcryptfs"
    echo "removed pgcryptfs from $PREFIX and its mount helpers from $SBIN"
    exit 0
fi

if [[ -z $BINARY ]]; then
    BINARY=$("$HERE/../scripts/build-release.sh")
fi
[[ -x $BINARY ]] || { echo "install.sh: $BINARY is not an executable" >&2; exit 1; }

install -D -m 0755 "$BINARY" "$PREFIX/bin/pgcryptfs"
for l in "${LINKS[@]}"; do
    ln -sfn "$PREFIX/bin/pgcryptfs" "$l"
done
install -d "$PREFIX/share/pgcryptfs/systemd"
install -m 0644 "$HERE"/*.service "$HERE"/*.mount "$PREFIX/share/pgcryptfs/systemd/"
echo "installed $PREFIX/bin/pgcryptfs and ${LINKS[*]}"
echo "example systemd units: $PREFIX/share/pgcryptfs/systemd/"
