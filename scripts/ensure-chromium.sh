#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian's packages `chromium` and
# `chromium-driver`: /usr/bin/chromium, /usr/bin/chromedriver) when missing. Used by `make test`:
# the console test (tests/it/console.rs) drives the admin plane's /ui page in a real browser.
# Exits non-zero when they could not be installed.
set -euo pipefail
have_chromium() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
}
if have_chromium; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Fonts come in as the package's dependencies; recommends (desktop integration) are not needed
# headless.
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
have_chromium
