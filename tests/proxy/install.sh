#!/bin/sh
# Installs the real proxies the proxy tests run (crates/duplex/tests/proxy.rs through
# crates/duplex-testkit): tinyproxy (HTTP CONNECT with Basic auth) and microsocks (SOCKS5 with
# user/password), from Debian apt, when either is missing. The tests start their own instances
# on free loopback ports with their own config files; the tinyproxy system service the package
# enables is not needed, so it is kept from starting during the install (policy-rc.d), which
# also lets the install succeed in containers without systemd. Fails loudly, naming what is
# missing.
set -eu
die() { echo "tests/proxy/install.sh: ERROR: $*" >&2; exit 1; }

# tinyproxy lives in /usr/bin on Debian (older releases: /usr/sbin).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
missing=
for pkg in tinyproxy microsocks; do
  if ! have "$pkg" || ! dpkg -s "$pkg" >/dev/null 2>&1; then
    missing="$missing $pkg"
  fi
done

if [ -z "$missing" ]; then
  echo "proxy test services present: tinyproxy $(dpkg-query -W -f='${Version}' tinyproxy)," \
    "microsocks $(dpkg-query -W -f='${Version}' microsocks)"
  exit 0
fi

echo "installing proxy test services:$missing"
command -v apt-get >/dev/null || die "apt-get not found; install$missing by hand"
if [ "$(id -u)" -eq 0 ]; then
  sudo=
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=sudo
else
  die "need root (or passwordless sudo) to apt-get install$missing"
fi

# Keep tinyproxy's service (port 8888) from starting: exit 101 = "action forbidden" for
# invoke-rc.d. Only if no policy is in place already.
policy=/usr/sbin/policy-rc.d
added_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

# apt-get update only when the package lists do not know a package we need.
for pkg in $missing; do
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    $sudo apt-get update
    break
  fi
done
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing ||
  die "apt-get install$missing failed"

for bin in tinyproxy microsocks; do
  have "$bin" || die "$bin is still missing after apt-get install"
done
echo "installed:$missing"
