#!/usr/bin/env bash
# The one test command (README): installs what the tests need, then runs every test.
#   bash scripts/test.sh            everything (unit, property, integration, Autobahn 1-10 both sides)
#   AUTOBAHN_SECTIONS=all bash scripts/test.sh   also sections 12/13 (permessage-deflate)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

step() { printf '\n==== %s ====\n' "$*"; }

step "toolchain"
cargo --version
rustup component list --installed 2>/dev/null | grep -E 'clippy|rustfmt' || true

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit, property and integration tests"
cargo test --workspace --locked

step "release build of the testees"
cargo build --release --locked -p duplex-cli
cargo build --release --locked -p duplex --example autobahn_client

step "Autobahn|Testsuite (real wstest), server and client"
bash tests/autobahn/install.sh
sections=${AUTOBAHN_SECTIONS:-1-10}
bash tests/autobahn/run.sh server --sections "$sections" --out "$repo/target/autobahn/server"
bash tests/autobahn/run.sh client --sections "$sections" --out "$repo/target/autobahn/client"
python3 tests/autobahn/grade.py --server "$repo/target/autobahn/server" --client "$repo/target/autobahn/client" \
  --markdown "$repo/target/autobahn/CONFORMANCE.md" --command "bash scripts/test.sh"

step "all tests passed"
