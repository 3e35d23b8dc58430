#!/usr/bin/env bash
# Installs cargo-fuzz (crates.io) when missing. Used by `make fuzz` and `make fuzz-smoke`.
# cargo-fuzz drives libFuzzer through `-Z sanitizer=...`, a nightly flag: the fuzz targets are
# built with the stable toolchain and RUSTC_BOOTSTRAP=1 (set by the Makefile), so no nightly
# toolchain is needed. libFuzzer itself is compiled from source by the libfuzzer-sys crate, which
# needs a C++ compiler: installed from Debian's packages when missing.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v c++ >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq g++ >/dev/null
fi
if cargo fuzz --version >/dev/null 2>&1; then
  exit 0
fi
cargo install --locked cargo-fuzz
cargo fuzz --version >/dev/null
