#!/usr/bin/env bash
# Builds the release binary and prints its path on stdout, wherever cargo's target directory is
# (CARGO_TARGET_DIR, build.target-dir in a cargo config, or ./target). Cargo's output goes to stderr.
# Usage: BIN=$(scripts/build-release.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/cargo-env.sh
cargo build --release --locked -j"${BUILD_JOBS:-2}" --bin pgcryptfs >&2
# The one place that knows where the binary lands: cargo's own report of its target directory.
target=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target/release/pgcryptfs
[[ -x $bin ]] || { echo "build-release.sh: cargo built no $bin" >&2; exit 1; }
printf '%s\n' "$bin"
