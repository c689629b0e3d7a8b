#!/usr/bin/env bash
# Runs the README's two commands the way a new user meets them: in a bare Debian 12 (bookworm)
# root file system made by debootstrap, with only this machine's Rust toolchain copied in and
# /dev, /proc, /sys bound. Prints how long each command took.
#
# Usage: sudo benches/fresh-machine.sh [--root DIR] [--keep] [--only quickstart|ci]
#   --root DIR   where the root file system goes (default /var/tmp/pgcryptfs-fresh)
#   --keep       keep DIR afterwards (a second run then reuses the debootstrap, not the build)
#   --only X     run just one of the two commands
# Needs: debootstrap (apt-get install debootstrap), rustup's toolchain in ~/.rustup, ~25 GB free.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=/var/tmp/pgcryptfs-fresh
KEEP=0
ONLY=
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while (($#)); do
    case $1 in
        --root) ROOT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "fresh-machine.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "fresh-machine.sh: run as root (debootstrap, bind mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh-machine.sh: apt-get install debootstrap first" >&2; exit 1; }

MOUNTS=()
cleanup() {
    # Anything the tests left mounted inside the root (FUSE mounts) goes first, deepest first.
    if [[ -d $ROOT ]]; then
        findmnt -rn -o TARGET | grep "^$ROOT/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    ((KEEP)) || rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT

if [[ ! -x $ROOT/bin/bash ]]; then
    echo "== debootstrap bookworm into $ROOT"
    t0=$SECONDS
    # sudo: the README's commands start with it, as a user's machine has it.
    debootstrap --variant=minbase --include=sudo,ca-certificates bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
        || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
    echo "   $((SECONDS - t0)) s"
fi

# The machine's Rust toolchain (the default one rustup names), nothing else of the host's.
TC=$(rustup show active-toolchain | cut -d' ' -f1)
TCDIR=$(rustc --print sysroot)
mkdir -p "$ROOT/root/.rustup/toolchains" "$ROOT/root/.cargo/bin"
if [[ ! -d $ROOT/root/.rustup/toolchains/$TC ]]; then
    cp -a "$TCDIR" "$ROOT/root/.rustup/toolchains/$TC"
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "default"\nauto_self_update = "disable"\n' "$TC" \
        > "$ROOT/root/.rustup/settings.toml"
    cp -a "$(command -v rustup)" "$ROOT/root/.cargo/bin/rustup"
    for t in cargo rustc rustdoc rustfmt cargo-clippy clippy-driver rust-gdb rust-lldb; do
        ln -sf rustup "$ROOT/root/.cargo/bin/$t"
    done
fi
# A host that reaches the registries through a TLS-inspecting proxy trusts that proxy's CA;
# the fresh root needs the same certificates to reach them (a machine on the open internet has none).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || true
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# As in Debian's container images: packages do not start services inside the root (postgresql's
# package would otherwise start a cluster of its own there).
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
[[ -f /etc/apt/sources.list.d/debian.sources ]] && cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/"

# The checkout, as a clone of what is committed (no build products, no local changes).
rm -rf "$ROOT/src"
git clone -q --no-hardlinks "$HERE" "$ROOT/src/pgcryptfs"
[[ -d $HERE/../shared ]] && cp -a "$HERE/../shared" "$ROOT/src/shared"

for m in dev dev/pts proc sys; do
    mkdir -p "$ROOT/$m"
    mount --bind "/$m" "$ROOT/$m"
done
mount -t tmpfs tmpfs "$ROOT/tmp"

run() { # NAME COMMAND: runs COMMAND in the root as a login shell of root, times it
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS rc=0
    chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
        CI="${CI_IN_ROOT:-}" \
        /bin/bash -c "cd /src/pgcryptfs && $*" >"$ROOT.$name.log" 2>&1 || rc=$?
    local secs=$((SECONDS - t0))
    tail -5 "$ROOT.$name.log" | sed 's/^/   | /'
    echo "   $name: exit $rc after $((secs / 60)) min $((secs % 60)) s (log $ROOT.$name.log)"
    return $rc
}
status=0
if [[ -z $ONLY || $ONLY == quickstart ]]; then
    run quickstart sudo ./examples/quickstart.sh || status=1
fi
if [[ -z $ONLY || $ONLY == ci ]]; then
    run ci sudo bash .ci/run || status=1
fi
for m in tmp sys proc dev/pts dev; do umount -l "$ROOT/$m" 2>/dev/null || true; done
exit $status
