#!/usr/bin/env bash
# Installs redis-py (Debian's package `python3-redis`, for Debian's /usr/bin/python3) when it
# cannot `import redis`. Used by
# `make test`: a test drives redis-py's own connection pool through the shared upstream pool;
# never needed by hand. Exits non-zero when it could not be installed.
set -euo pipefail
have_redis_py() {
  /usr/bin/python3 -c 'import redis' >/dev/null 2>&1
}
if have_redis_py; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends python3-redis >/dev/null
have_redis_py
