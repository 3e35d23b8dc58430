#!/usr/bin/env bash
# Installs twemproxy (Debian's package `nutcracker`, binary /usr/sbin/nutcracker) when missing.
# Used by `make bench` for its reference arm; never needed by hand. Exits non-zero when it could
# not be installed (the benchmark then runs without that arm).
set -euo pipefail
have_nutcracker() {
  command -v nutcracker >/dev/null 2>&1 || [ -x /usr/sbin/nutcracker ]
}
if have_nutcracker; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq nutcracker >/dev/null
# The Debian package starts a system service (127.0.0.1:22121, stats on 22222); the benchmark
# runs its own instance.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl stop nutcracker >/dev/null 2>&1 || true
  $SUDO systemctl disable nutcracker >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/nutcracker ]; then $SUDO /etc/init.d/nutcracker stop >/dev/null 2>&1 || true; fi
if command -v update-rc.d >/dev/null 2>&1; then $SUDO update-rc.d nutcracker disable >/dev/null 2>&1 || true; fi
have_nutcracker
