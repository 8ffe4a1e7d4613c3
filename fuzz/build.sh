#!/usr/bin/env bash
# Builds every fuzz target: what CI runs to prove they still compile.
#
#   fuzz/build.sh            # unoptimised (--dev) + ASan: the quick compile check for CI
#   fuzz/build.sh -O         # release + ASan, exactly what `cargo fuzz run` builds
#
# Arguments, if any, go to `cargo fuzz build` instead of `--dev`. Installs cargo-fuzz first
# if it is missing. Measured cold on the 2-core machine while it was busy with other work:
# installing cargo-fuzz ~70 s, `--dev` ~1m45, `-O` ~2-3.5 min.
# The toolchain is stable: cargo-fuzz passes nightly-only -Z flags to rustc, which stable
# accepts with RUSTC_BOOTSTRAP=1 (the ASan runtime ships with stable's rust-std, so the
# default address sanitizer works).
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# fuzz/Cargo.lock is committed; refuse to silently change it.
cargo metadata --locked --format-version 1 >/dev/null

if [ $# -eq 0 ]; then
    set -- --dev
fi
RUSTC_BOOTSTRAP=1 cargo fuzz build "$@"
echo "built fuzz targets: $(cargo fuzz list | tr '\n' ' ')"
