# Sourced by the scripts that run cargo (build-release.sh, .ci/run, fuzz/run.sh): puts rustup's
# cargo on PATH when it is not there already. `sudo` resets PATH (Debian's secure_path has no
# ~/.cargo/bin), so under `sudo ./examples/quickstart.sh` cargo is found in root's home or, for
# a toolchain installed by the user who ran sudo, in that user's (with its RUSTUP_HOME).
if ! command -v cargo >/dev/null 2>&1; then
    for _home in "${HOME:-}" "$(getent passwd "${SUDO_USER:-}" 2>/dev/null | cut -d: -f6)" /root; do
        if [ -n "$_home" ] && [ -x "$_home/.cargo/bin/cargo" ]; then
            export PATH="$_home/.cargo/bin:$PATH"
            if [ "$_home" != "${HOME:-}" ]; then
                export CARGO_HOME="${CARGO_HOME:-$_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$_home/.rustup}"
            fi
            break
        fi
    done
    unset _home
fi
command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install Rust with rustup (https://rustup.rs) for root or for the user running sudo" >&2
    exit 1
}
