#!/bin/sh
# Installs the pinned pusher-js (client) and pusher (server SDK) for the compatibility tests.
set -eu
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "install.sh: node is required (Node 18+)" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm is required" >&2; exit 1; }
npm ci --no-audit --no-fund
