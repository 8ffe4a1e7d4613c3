#!/bin/sh
# Installs the pinned Node packages (pusher-js, laravel-echo, the pusher server SDK,
# playwright-core; package-lock.json) and the official Python server SDK (requirements.txt) into
# tests/pusher/.venv, for the compatibility tests. Fails loudly, naming what is missing.
set -eu
cd "$(dirname "$0")"
die() { echo "tests/pusher/install.sh: ERROR: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is required (Node 20.19+: laravel-echo 2 needs it)"
command -v npm >/dev/null || die "npm is required"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' ||
  die "node $(node --version) is too old: laravel-echo 2.5 needs ^20.19 or >= 22.12"
npm ci --no-audit --no-fund

command -v python3 >/dev/null || die "python3 is required (for the Python pusher SDK)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' ||
  die "python3 $(python3 -V 2>&1) is too old: need >= 3.8"
# Reinstalled only when requirements.txt changed (the stamp holds its hash).
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.requirements.sha256 2>/dev/null)" = "$want" ] &&
  .venv/bin/python -c 'import pusher' 2>/dev/null; then
  echo "tests/pusher/.venv up to date"
else
  rm -rf .venv
  python3 -m venv .venv || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt ||
    die "pip could not install tests/pusher/requirements.txt into tests/pusher/.venv"
  echo "$want" > .venv/.requirements.sha256
fi
.venv/bin/python -c 'import pusher.version as v; print("python pusher", v.VERSION)'
