#!/usr/bin/env bash
# Installs HAProxy (Debian's package `haproxy`, binary /usr/sbin/haproxy) when missing.
# Used by `make bench` (scripts/bench.py) for its `haproxy` arm, a 1:1 TCP proxy that audits
# nothing; never needed by hand. Exits non-zero when it could not be installed.
set -euo pipefail
have_haproxy() {
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]
}
if have_haproxy; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends haproxy >/dev/null
# The Debian package starts a system service (its default config listens nowhere useful); the
# benchmark runs its own instance.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl stop haproxy >/dev/null 2>&1 || true
  $SUDO systemctl disable haproxy >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/haproxy ]; then $SUDO /etc/init.d/haproxy stop >/dev/null 2>&1 || true; fi
if command -v update-rc.d >/dev/null 2>&1; then $SUDO update-rc.d haproxy disable >/dev/null 2>&1 || true; fi
have_haproxy
