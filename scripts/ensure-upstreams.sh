#!/usr/bin/env bash
# Builds the newer servers the tests also run against — Redis 7.2.6 and Valkey 8.0.1, from the
# sources in ../shared/upstreams — once, into $UPSTREAMS_CACHE (default
# ~/.cache/redis-audit-proxy-upstreams; about 2 minutes each on 2 cores, then instant).
# Installs the compiler and OpenSSL headers first when missing. Used by `make test`; never
# needed by hand. Fails loudly: a test against a server that is not there fails too.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build="${UPSTREAMS_DIR:-$here/../shared/upstreams}/build.sh"
if [ ! -x "$build" ]; then
  echo "ensure-upstreams: $build not found (the shared folder beside the repository holds the sources)" >&2
  exit 2
fi
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1 ||
  ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists openssl 2>/dev/null; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq build-essential pkg-config libssl-dev >/dev/null
fi
for name in redis-7.2.6 valkey-8.0.1; do
  echo "ensure-upstreams: $name in $("$build" "$name")"
done
