#!/usr/bin/env bash
# One command for the side-by-side benchmark: builds duplex and the peer servers (release),
# runs every workload against every server interleaved (server on CPU 0, client on CPU 1),
# measures idle RSS per connection, and rewrites the side-by-side section of BENCHMARKS.md.
# Options: see `bench/run.sh --help` (bench/side_by_side.py).
set -euo pipefail
exec python3 "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/side_by_side.py" "$@"
