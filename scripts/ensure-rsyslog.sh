#!/usr/bin/env bash
# Installs rsyslog with its TLS netstream drivers (Debian's `rsyslog`, binary /usr/sbin/rsyslogd,
# `rsyslog-gnutls` for imtcp's `gtls` driver, and `rsyslog-relp` for the RELP input `imrelp`)
# when missing. Used by `make test`: the tests in
# tests/it/sinks.rs start their own rsyslogd, with their own config on a loopback port, as the
# collector the syslog sink sends to. Never needed by hand. Exits non-zero when it could not be
# installed.
set -euo pipefail
have_rsyslog() {
  [ -x /usr/sbin/rsyslogd ] && ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 &&
    ls /usr/lib/*/rsyslog/imrelp.so >/dev/null 2>&1
}
if have_rsyslog; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls rsyslog-relp >/dev/null
# The Debian package starts the system's own rsyslogd; the tests run their own instances, and
# the system one is not needed by them.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl stop rsyslog >/dev/null 2>&1 || true
  $SUDO systemctl disable rsyslog >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/rsyslog ]; then $SUDO /etc/init.d/rsyslog stop >/dev/null 2>&1 || true; fi
if command -v update-rc.d >/dev/null 2>&1; then $SUDO update-rc.d rsyslog disable >/dev/null 2>&1 || true; fi
have_rsyslog
