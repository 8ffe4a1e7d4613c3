#!/usr/bin/env bash
# Builds what the side-by-side benchmark runs, in release mode:
#   target/release/duplex                      (main workspace, crate duplex-cli)
#   bench/peers/target/release/peer-tungstenite, peer-fastwebsockets, peer-tokio-websockets
# The peers are their own cargo workspace; bench/peers/Cargo.lock pins their versions.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --locked --manifest-path "$root/Cargo.toml" -p duplex-cli
cargo build --release --locked --manifest-path "$root/bench/peers/Cargo.toml"
