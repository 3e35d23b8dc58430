#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each (or, with FUZZ_RUNS set,
# for that many executions each, however long it takes), FUZZ_JOBS at a time,
# over its working corpus (fuzz/corpus/<target>, not checked in) and its checked-in seeds
# (fuzz/seeds/<target>); prints one line per target: executions, seconds, crashes.
# Used by `make fuzz` (FUZZ_SECONDS=600) and `make fuzz-smoke` (FUZZ_SECONDS=30, part of `make test`).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz passes `-Z` flags (sanitizer, coverage): allowed on the stable toolchain so.
export RUSTC_BOOTSTRAP=1
SECONDS_EACH="${FUZZ_SECONDS:-600}"
RUNS_EACH="${FUZZ_RUNS:-}"
if [ -n "$RUNS_EACH" ]; then
  LIMIT=(-runs="$RUNS_EACH")
else
  LIMIT=(-max_total_time="$SECONDS_EACH")
fi
JOBS="${FUZZ_JOBS:-1}"
# The proxy forbids `unsafe` (Cargo.toml lints), so AddressSanitizer finds nothing safe Rust's
# own checks (bounds, overflow with debug assertions) do not, and costs 20-40x in executions a
# second; FUZZ_SANITIZER=address brings it back (e.g. to check a dependency's unsafe code).
SANITIZER="${FUZZ_SANITIZER:-none}"
FUZZ_FLAGS=(--fuzz-dir fuzz --sanitizer "$SANITIZER" --debug-assertions)
TARGETS="${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}"
cargo fuzz build "${FUZZ_FLAGS[@]}" >/dev/null
mkdir -p fuzz/logs
run_one() {
  local target="$1"
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  local log="fuzz/logs/$target.log"
  local status=0
  local started=$SECONDS
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    "${LIMIT[@]}" -print_final_stats=1 >"$log" 2>&1 || status=$?
  local execs
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
  local crashes
  # `slow-unit-*` only says an input took over 10 s (e.g. while the process was stopped):
  # reported by libFuzzer, not a failure.
  crashes=$(find "fuzz/artifacts/$target" -type f ! -name 'slow-unit-*' | wc -l)
  echo "$target: ${execs:-?} executions in $((SECONDS - started)) s, exit $status, crash inputs: $crashes"
  [ "$status" = 0 ] && [ "$crashes" = 0 ]
}
failed=0
running=0
for target in $TARGETS; do
  run_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
if [ "$failed" != 0 ]; then
  echo "fuzzing found crashes: see fuzz/logs/ and fuzz/artifacts/" >&2
  exit 1
fi
