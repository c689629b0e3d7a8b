#!/usr/bin/env bash
# Builds the cargo-fuzz targets of fuzz/ and runs each on its committed corpus
# (fuzz/corpus/<target>/); fails if any target crashes, panics, leaks past the RSS limit or
# hangs. New inputs go to a scratch directory, never into the committed corpus; a crashing
# input is saved as fuzz/artifacts/<target>/crash-<sha1>.
#
#   fuzz/run.sh --ci                  what .ci/run does: every target for $CI_SECS s, seed 1
#   fuzz/run.sh [SECS] [TARGET...]    longer runs, e.g. fuzz/run.sh 3600 format_records lease
#
# Toolchain: stable, with `--sanitizer none` (libFuzzer's coverage instrumentation works on
# stable; AddressSanitizer needs nightly and only matters for unsafe code, which these
# decoders do not have). FUZZ_TOOLCHAIN=nightly FUZZ_SANITIZER=address switches both.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
TOOLCHAIN=${FUZZ_TOOLCHAIN:-stable}
SANITIZER=${FUZZ_SANITIZER:-none}
CI_SECS=${CI_SECS:-10}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

secs=60
seed=()
if [ "${1:-}" = "--ci" ]; then
    secs=$CI_SECS
    seed=(-seed=1)
    shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "fuzz/run.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo +"$TOOLCHAIN" install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

start=$(date +%s)
cargo +"$TOOLCHAIN" fuzz build --sanitizer "$SANITIZER"
echo "fuzz/run.sh: built in $(( $(date +%s) - start )) s" >&2

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +"$TOOLCHAIN" fuzz list)
fi
bin=target/x86_64-unknown-linux-gnu/release
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "artifacts/$t" "corpus/$t"
    extra=()
    # mount.pgcryptfs -s warns on stderr for each unknown option: keep the log readable.
    [ "$t" = mount_options ] && extra=(-close_fd_mask=2)
    echo "fuzz/run.sh: $t for $secs s" >&2
    if ! "$bin/$t" "$scratch/$t" "corpus/$t" "${seed[@]}" "${extra[@]}" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" -print_final_stats=0 2>"$scratch/$t.log"; then
        tail -n 40 "$scratch/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^(#[0-9]+\s+DONE|Done [0-9]+ runs)' "$scratch/$t.log" | tail -n 1 >&2 || true
    fi
done
echo "fuzz/run.sh: ${#targets[@]} targets in $(( $(date +%s) - start )) s" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
        "fuzz/$bin/<target> <input>)" >&2
    exit 1
fi
