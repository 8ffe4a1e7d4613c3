#!/bin/sh
# Installs the real services the tests run through crates/duplex-testkit, from Debian apt, when
# any is missing: redis-server, redis-sentinel, nginx, haproxy (cluster tests), tinyproxy and
# microsocks (client proxy tests). The tests start their own instances on free loopback ports
# with their own config files; the system services the packages enable are not needed, so they
# are kept from starting during the install (policy-rc.d), which also lets the install succeed
# in containers without systemd. Fails loudly, naming what is missing.
#
#   sh tests/services/install.sh            all of them
#   sh tests/services/install.sh PKG:BIN... only these (package:binary)
set -eu
die() { echo "tests/services/install.sh: ERROR: $*" >&2; exit 1; }

if [ "$#" -eq 0 ]; then
  set -- redis-server:redis-server redis-sentinel:redis-sentinel nginx:nginx haproxy:haproxy \
    tinyproxy:tinyproxy microsocks:microsocks
fi

# nginx, haproxy (and tinyproxy on older releases) live in /usr/sbin, often not in PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
missing=
for pair in "$@"; do
  pkg=${pair%%:*}
  bin=${pair#*:}
  if ! have "$bin" || ! dpkg -s "$pkg" >/dev/null 2>&1; then
    missing="$missing $pkg"
  fi
done

if [ -z "$missing" ]; then
  versions=
  for pair in "$@"; do
    pkg=${pair%%:*}
    versions="$versions $pkg $(dpkg-query -W -f='${Version}' "$pkg"),"
  done
  echo "test services present:${versions%,}"
  exit 0
fi

echo "installing test services:$missing"
command -v apt-get >/dev/null || die "apt-get not found; install$missing by hand"
if [ "$(id -u)" -eq 0 ]; then
  sudo=
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=sudo
else
  die "need root (or passwordless sudo) to apt-get install$missing"
fi

# Keep the packages' services (redis on 6379, sentinel on 26379, nginx on 80, tinyproxy on
# 8888) from starting: exit 101 = "action forbidden" for invoke-rc.d. Only if no policy is in
# place already.
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

for pair in "$@"; do
  bin=${pair#*:}
  have "$bin" || die "$bin is still missing after apt-get install"
done
echo "installed:$missing"
