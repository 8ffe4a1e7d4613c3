#!/usr/bin/env bash
# Installs the interop peers (idempotent; a second run with nothing changed takes ~1 s):
#   * Python `websockets` (tests/interop/requirements.txt) in <repo>/.interop/venv
#   * Node `ws` and `playwright-core` (tests/interop/package-lock.json) via `npm ci`
#   * Debian's `chromium` at /usr/bin/chromium (playwright-core drives it; no browser download)
# Fails loudly, naming what could not be installed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv="$repo/.interop/venv"

die() {
    printf '\ntests/interop/install.sh: ERROR: %s\n' "$*" >&2
    exit 1
}
step() { printf '==== interop install: %s\n' "$*"; }

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- Python websockets
step "Python websockets -> $venv"
command -v python3 >/dev/null || die "python3 is not on PATH (needed for the websockets peer)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "python3 $(python3 -V 2>&1) is too old: websockets 17 needs Python >= 3.10"
py_stamp="$venv/.requirements.sha256"
py_want=$(hash_of "$here/requirements.txt")
if [[ -x "$venv/bin/python" && -f "$py_stamp" && "$(cat "$py_stamp")" == "$py_want" ]] &&
    "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
    echo "up to date ($("$venv/bin/python" -c 'import websockets; print("websockets", websockets.__version__)'))"
else
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || die "could not create the venv $venv (python3 -m venv failed; on Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" ||
        die "pip could not install tests/interop/requirements.txt into $venv"
    echo "$py_want" >"$py_stamp"
    "$venv/bin/python" -c 'import websockets; print("installed websockets", websockets.__version__)'
fi

# ---------------------------------------------------------------- Node ws + playwright-core
step "Node ws + playwright-core -> tests/interop/node_modules"
command -v node >/dev/null || die "node is not on PATH (needed for the ws peer and the Chromium driver)"
command -v npm >/dev/null || die "npm is not on PATH"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    die "node $(node --version) is too old: playwright-core 1.65 needs Node >= 20"
js_stamp="$here/node_modules/.interop-lock.sha256"
js_want=$(hash_of "$here/package-lock.json")
if [[ -f "$js_stamp" && "$(cat "$js_stamp")" == "$js_want" ]]; then
    echo "up to date"
else
    # No browser download: playwright-core has no install script and uses /usr/bin/chromium.
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed in tests/interop (package-lock.json)"
    echo "$js_want" >"$js_stamp"
fi
(cd "$here" && node -e 'console.log("ws", require("ws/package.json").version, "/ playwright-core", require("playwright-core/package.json").version)') ||
    die "node_modules is incomplete after npm ci"

# ---------------------------------------------------------------- Chromium
step "Chromium -> /usr/bin/chromium"
if [[ -x /usr/bin/chromium ]]; then
    echo "present"
else
    command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and apt-get is not available: install Chromium there by hand"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "/usr/bin/chromium is missing; installing it needs root (or sudo): apt-get install chromium"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium ||
        die "apt-get install chromium failed"
    [[ -x /usr/bin/chromium ]] || die "apt-get installed chromium but /usr/bin/chromium is still missing"
fi
/usr/bin/chromium --version 2>/dev/null || die "/usr/bin/chromium does not run"

step "done"
