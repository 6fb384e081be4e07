#!/usr/bin/env bash
# Builds the guest strategies in guest-examples/ for wasm32-unknown-unknown and
# copies them to guest-examples/out/<crate_name>.wasm (the stable path the
# README, the tests and the benches use), then the AssemblyScript ones
# (scripts/build-assemblyscript.sh: npm's assemblyscript, a few seconds, and
# nothing when its inputs are unchanged).
#
# Toolchain: the normal path is rustup's wasm32 target. Where rustup cannot
# download it (these machines have no internet but the package registries), it
# falls back to Debian's rustc-web with its matching std sources and rebuilds
# core/alloc for wasm with -Zbuild-std (see ../shared/TOOLCHAIN.md). Installs
# what it needs, idempotently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
guests="$root/guest-examples"
out="$guests/out"
# The guest workspace keeps its own target directory (core and alloc are
# rebuilt for wasm once there), whatever the caller's CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="$guests/target"
say() { printf '==> %s\n' "$*" >&2; }

have_rustup_target() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown
}

build_with_rustup() {
    say "building guests with rustup's wasm32-unknown-unknown target"
    (cd "$guests" && cargo build --release --target wasm32-unknown-unknown)
}

ensure_debian_toolchain() {
    if [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && [ -x /usr/bin/cargo ]; then
        return
    fi
    say "installing Debian's rustc-web, cargo-web and rust-web-src (wasm fallback toolchain)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        rustc-web cargo-web rust-web-src >/dev/null
}

build_with_build_std() {
    ensure_debian_toolchain
    local lld
    lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
    if [ ! -x "$lld" ]; then
        lld=$(command -v rust-lld || command -v wasm-ld || true)
    fi
    [ -n "$lld" ] || { echo "no rust-lld or wasm-ld found to link wasm" >&2; exit 1; }
    say "building guests with Debian's $(/usr/bin/rustc --version) and -Zbuild-std=core,alloc"
    (cd "$guests" && RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C linker=$lld -C target-feature=+simd128" \
        /usr/bin/cargo build --release -Zbuild-std=core,alloc --target wasm32-unknown-unknown)
}

if have_rustup_target; then
    build_with_rustup
elif [ "${PALISADE_NO_RUSTUP_ADD:-}" != 1 ] && command -v rustup >/dev/null 2>&1 &&
    timeout 60 rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
    build_with_rustup
else
    build_with_build_std
fi

mkdir -p "$out"
for wasm in "$guests"/target/wasm32-unknown-unknown/release/*.wasm; do
    cp "$wasm" "$out/"
done
"$root/scripts/build-assemblyscript.sh"
say "guest modules in ${out#"$root"/}: $(cd "$out" && ls ./*.wasm | sed 's|^\./||' | tr '\n' ' ')"
