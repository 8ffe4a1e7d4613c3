#!/usr/bin/env bash
# The one test command (README): installs what the tests need, then runs every test.
#   bash scripts/test.sh                       everything
#   AUTOBAHN_SCOPE=1-10 bash scripts/test.sh   only Autobahn sections 1-10 (quicker, local use)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$SECONDS

step() { printf '\n==== %s (t=%ss) ====\n' "$*" "$((SECONDS - started))"; }

step "toolchain"
cargo --version
rustc --version

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "rustdoc (warnings are errors)"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features --locked

step "interop peers (Python websockets, Node ws, Chromium), Pusher SDKs (pusher-js, pusher), services from apt (redis-server, redis-sentinel, nginx, haproxy, tinyproxy, microsocks)"
bash tests/interop/install.sh
bash tests/pusher/install.sh
sh tests/services/install.sh

step "unit, property, integration and interop tests"
cargo test --workspace --all-features --locked

step "fuzz targets: build (ASan), then 10 s of each from its seeds"
bash fuzz/build.sh
fuzz_tmp=$(mktemp -d)
for target in $(cd fuzz && cargo fuzz list); do
  mkdir -p "$fuzz_tmp/$target"
  # Any crash, leak, timeout or out-of-memory makes cargo fuzz exit non-zero.
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --dev "$target" "$fuzz_tmp/$target" "seeds/$target" -- \
        -max_total_time=10 -print_final_stats=1) > "$fuzz_tmp/$target.log" 2>&1; then
    tail -n 60 "$fuzz_tmp/$target.log"
    echo "fuzz target $target failed (artifacts in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  echo "$target: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$fuzz_tmp/$target.log")"
done
rm -rf "$fuzz_tmp"

step "release build of the testees"
cargo build --release --locked -p duplex-cli
cargo build --release --locked -p duplex --example autobahn_client

step "Autobahn|Testsuite (real wstest): server and client"
bash tests/autobahn/install.sh
out="$repo/target/autobahn"
rm -rf "$out"
mkdir -p "$out"
scope=${AUTOBAHN_SCOPE:-all}
if [ "$scope" = all ]; then select=(--all); else select=(--sections "$scope"); fi
# Both sides at once: each is one single-threaded wstest process, and this machine has 2 cores.
bash tests/autobahn/run.sh server "${select[@]}" --deflate --out "$out/server" > "$out/server.log" 2>&1 &
server_pid=$!
bash tests/autobahn/run.sh client "${select[@]}" --out "$out/client" > "$out/client.log" 2>&1 &
client_pid=$!
server_rc=0; client_rc=0
wait "$server_pid" || server_rc=$?
wait "$client_pid" || client_rc=$?
tail -n 40 "$out/server.log"
tail -n 40 "$out/client.log"
python3 tests/autobahn/grade.py --server "$out/server" --client "$out/client" "${select[@]}" \
  --markdown "$out/CONFORMANCE.md" --command "bash scripts/test.sh"
if [ "$server_rc" -ne 0 ] || [ "$client_rc" -ne 0 ]; then
  echo "Autobahn failed: server rc=$server_rc, client rc=$client_rc (logs in $out)" >&2
  exit 1
fi

step "all tests passed"
