#!/usr/bin/env bash
# Installs redis-server / redis-cli / redis-benchmark (and openssl, which `make bench` uses for
# its TLS certificates) from Debian's packages when missing.
# Used by `make run`, `make test` and `make bench`; never needed by hand.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1 &&
  command -v openssl >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server redis-tools openssl >/dev/null
# The Debian package starts a system service on 6379; the project manages its own servers.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop redis-server >/dev/null 2>&1 || true; fi
if [ -x /etc/init.d/redis-server ]; then $SUDO /etc/init.d/redis-server stop >/dev/null 2>&1 || true; fi
command -v redis-server >/dev/null
