#!/usr/bin/env bash
# A/B of the proxy's runtimes (issue 14): CPU per request of the proxy process and throughput,
# `proxy.runtime = "multi_thread"` against `"per_core"`, audit off and on, with HAProxy in TCP
# mode (the floor for a 1:1 proxy) and Redis directly as references, all in one run, the arms
# alternating in each round (the machine is shared: compare within a run, never across runs).
#
# Each arm starts its process, runs `redis-benchmark -c CLIENTS -n REQUESTS -r 100000 -t set,get
# -P P` for each pipeline depth, and reads utime+stime (/proc/PID/stat, all threads) of the
# process under test before and after each run: CPU µs per request = delta / (2 × REQUESTS)
# (and the user part of it alone, where changes to the proxy's own code show with less noise).
# With audit on, the reading after a run waits until the audit files stop growing, so that the
# writer thread's CPU is counted. Then the process stops (SIGTERM) and the next arm starts.
#
# Arms (AB_ARMS, space separated; an arm may name another binary as ARM@PATH, e.g.
# `mt-off@/tmp/old-proxy`, to compare builds):
#   direct    redis-benchmark against redis-server (no CPU column: no process in between)
#   haproxy   HAProxy, mode tcp, default threads (one per CPU)
#   mt-off    proxy, runtime = "multi_thread", [audit] enabled = false
#   pc-off    proxy, runtime = "per_core",     [audit] enabled = false
#   mt-on     proxy, runtime = "multi_thread", audit on (defaults: async durability)
#   pc-on     proxy, runtime = "per_core",     audit on
#
# Environment: AB_ARMS (default "direct haproxy mt-off pc-off mt-on pc-on"), AB_ROUNDS (3),
# AB_REQUESTS (200000), AB_CLIENTS (50), AB_PIPELINES ("1 16"), AB_THREADS (proxy.threads, 0),
# AB_BIN (default target/release/redis-audit-proxy, built if missing), AB_OUT (raw results,
# default target/ab-runtime/results.csv). Needs redis-server, redis-benchmark, haproxy (for its
# arm) and python3 (for the summary).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARMS=${AB_ARMS:-"direct haproxy mt-off pc-off mt-on pc-on"}
ROUNDS=${AB_ROUNDS:-3}
REQUESTS=${AB_REQUESTS:-200000}
CLIENTS=${AB_CLIENTS:-50}
PIPELINES=${AB_PIPELINES:-"1 16"}
THREADS=${AB_THREADS:-0}
BIN=${AB_BIN:-$ROOT/target/release/redis-audit-proxy}
WORK=$ROOT/target/ab-runtime
OUT=${AB_OUT:-$WORK/results.csv}
TICKS=$(getconf CLK_TCK)

log() { printf '[ab] %s\n' "$*" >&2; }
die() { printf '[ab] error: %s\n' "$*" >&2; exit 1; }

for tool in redis-server redis-benchmark redis-cli python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [[ ! -x $BIN ]]; then
  log "building $BIN"
  cargo build --release --bin redis-audit-proxy >&2
fi
mkdir -p "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --logfile '' --loglevel warning >/dev/null 2>&1 &
REDIS_PID=$!
ARM_PID=
cleanup() {
  [[ -n $ARM_PID ]] && kill "$ARM_PID" 2>/dev/null && wait "$ARM_PID" 2>/dev/null
  kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  return 0
}
trap cleanup EXIT

await_port() {
  local port=$1
  for _ in $(seq 1 200); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    [[ -n $ARM_PID ]] && ! kill -0 "$ARM_PID" 2>/dev/null && return 1
    sleep 0.05
  done
  return 1
}
await_port "$REDIS_PORT" || die "redis-server did not start"

# utime and stime of process $1, in clock ticks.
cpu_ticks() {
  local stat fields
  read -r stat <"/proc/$1/stat"
  read -r -a fields <<<"${stat##*) }"
  echo "${fields[11]} ${fields[12]}"
}

# Waits until the files under $1 stop growing (the audit writer caught up).
settle() {
  local before after
  before=$(du -sb "$1" | cut -f1)
  while sleep 0.2; do
    after=$(du -sb "$1" | cut -f1)
    [[ $after == "$before" ]] && return 0
    before=$after
  done
}

# start_arm NAME BINARY -> sets ARM_PID and ARM_PORT
start_arm() {
  local name=$1 binary=$2 runtime audit dir config
  ARM_PORT=$(free_port)
  case $name in
    direct) ARM_PID=; ARM_PORT=$REDIS_PORT; return 0 ;;
    haproxy)
      command -v haproxy >/dev/null || die "haproxy is not installed (apt-get install haproxy)"
      config=$WORK/haproxy.cfg
      cat >"$config" <<EOF
global
  maxconn 5000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen redis
  bind 127.0.0.1:$ARM_PORT
  server redis 127.0.0.1:$REDIS_PORT
EOF
      haproxy -db -f "$config" >"$WORK/haproxy.log" 2>&1 &
      ARM_PID=$!
      ;;
    mt-*|pc-*)
      [[ $name == mt-* ]] && runtime=multi_thread || runtime=per_core
      [[ $name == *-on ]] && audit=true || audit=false
      dir=$WORK/audit-$name
      rm -rf "$dir"
      config=$WORK/$name.toml
      cat >"$config" <<EOF
[proxy]
listen = "127.0.0.1:$ARM_PORT"
runtime = "$runtime"
threads = $THREADS
[upstream]
address = "127.0.0.1:$REDIS_PORT"
[admin]
listen = "127.0.0.1:0"
[audit]
enabled = $audit
dir = "$dir"
EOF
      "$binary" --config "$config" --log-level warn 2>"$WORK/$name.log" &
      ARM_PID=$!
      ;;
    *) die "unknown arm $name" ;;
  esac
  await_port "$ARM_PORT" || die "$name did not start (see $WORK)"
}

stop_arm() {
  [[ -z $ARM_PID ]] && return 0
  kill -TERM "$ARM_PID" 2>/dev/null || true
  wait "$ARM_PID" 2>/dev/null || true
  ARM_PID=
}

echo "round,arm,pipeline,set_rps,get_rps,cpu_us_per_request,user_us_per_request" >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so that no arm always runs first or last.
  read -r -a order <<<"$ARMS"
  shift_by=$(((round - 1) % ${#order[@]}))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for spec in "${order[@]}"; do
    name=${spec%%@*}
    binary=$BIN
    [[ $spec == *@* ]] && binary=${spec#*@}
    start_arm "$name" "$binary"
    for pipeline in $PIPELINES; do
      before="0 0"
      [[ -n $ARM_PID ]] && before=$(cpu_ticks "$ARM_PID")
      csv=$(redis-benchmark -p "$ARM_PORT" -c "$CLIENTS" -n "$REQUESTS" -r 100000 \
        -t set,get -P "$pipeline" --csv 2>/dev/null)
      cpu=,
      if [[ -n $ARM_PID ]]; then
        [[ $name == *-on ]] && settle "$WORK/audit-$name"
        after=$(cpu_ticks "$ARM_PID")
        cpu=$(python3 -c "
b, a, per = [int(x) for x in '$before'.split()], [int(x) for x in '$after'.split()], $TICKS * 2 * $REQUESTS / 1e6
print(f'{(a[0] + a[1] - b[0] - b[1]) / per:.2f},{(a[0] - b[0]) / per:.2f}')")
      fi
      set_rps=$(awk -F'"' '$2=="SET"{print $4}' <<<"$csv")
      get_rps=$(awk -F'"' '$2=="GET"{print $4}' <<<"$csv")
      echo "$round,$spec,$pipeline,$set_rps,$get_rps,$cpu" | tee -a "$OUT" >&2
    done
    stop_arm
  done
done

python3 - "$OUT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
arms = list(dict.fromkeys(r["arm"] for r in rows))
pipelines = list(dict.fromkeys(r["pipeline"] for r in rows))
for p in pipelines:
    print(f"\npipeline {p}: median over rounds (each round's value)")
    print("| arm | proxy CPU µs/request | of which user | SET rps | GET rps |")
    print("|---|---|---|---|---|")
    for arm in arms:
        sel = [r for r in rows if r["arm"] == arm and r["pipeline"] == p]
        def col(k):
            vals = [float(r[k]) for r in sel if r[k]]
            if not vals:
                return "-"
            each = " / ".join(r[k] for r in sel)
            return f"{statistics.median(vals):.2f} ({each})" if k.endswith("per_request") else f"{statistics.median(vals):.0f}"
        print(f"| {arm} | {col('cpu_us_per_request')} | {col('user_us_per_request')} | {col('set_rps')} | {col('get_rps')} |")
EOF
