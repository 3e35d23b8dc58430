#!/usr/bin/env bash
# End-to-end benchmark of the proxy against Redis directly and against twemproxy (`make bench`).
#
#   1. redis-benchmark SET/GET, 50 clients, pipeline 1 and 16, against a dedicated redis-server,
#      through the proxy in front of it (auditing every command to $WORK/audit), through a second
#      instance of the proxy with the audit trail disabled (`[audit] enabled = false`), and through
#      twemproxy (nutcracker, which audits nothing) in front of the same server, alternating
#      direct/proxy/proxy-noaudit/twemproxy for BENCH_ROUNDS rounds; medians per (pipeline, test).
#      The audit overhead is proxy rps / proxy-noaudit rps (target: >= 0.90 at pipeline 1 and 16).
#      A fifth arm, proxy-acl, is the auditing proxy with a users file in enforce mode (a
#      20-rule default user that allows the benchmark's commands): proxy-acl rps / proxy rps is
#      the cost of the ACL check.
#      Around each redis-benchmark run the CPU time (utime+stime from /proc/<pid>/stat) of
#      redis-server, of the proxy under test and of redis-benchmark is read, and reported as CPU
#      microseconds per request (medians over the rounds); for the auditing proxy the reading
#      after the run waits until its audit writer has caught up (audit files stop growing), so
#      that the writer thread's CPU is counted. After the rounds, the size and line count of the
#      audit trail the `proxy` arm wrote are reported.
#   2. Proxy memory per idle connection (BENCH_IDLE_CONNS idle clients, VmRSS delta).
#   3. Proxy peak memory for a 64 MiB value (SET then GET through the proxy, VmHWM delta).
#   4. TLS on both sides: redis-benchmark --tls at pipeline 1 against redis-server's own TLS
#      port and through the proxy's TLS listener with TLS to that port (auditing on),
#      alternating for BENCH_ROUNDS rounds (target: proxy >= 0.85 x direct). Certificates are
#      made with openssl for the run.
#
# Prints a plain report, then the same results as a markdown block for docs/benchmarks.md
# (also saved to target/bench/report.md, with the raw redis-benchmark CSV files beside it).
#
# Environment:
#   BENCH_REQUESTS     requests per redis-benchmark test (default 200000)
#   BENCH_ROUNDS       direct/proxy/proxy-noaudit/twemproxy alternations per pipeline depth
#                      (default 3)
#   BENCH_CLIENTS      redis-benchmark clients (default 50)
#   BENCH_PIPELINES    pipeline depths, space separated (default "1 16")
#   BENCH_IDLE_CONNS   idle connections for the memory test (default 2000)
#   BENCH_BIG_MIB      size of the big value in MiB (default 64)
#   BENCH_REDIS_PORT   port of the dedicated redis-server (default 16379, or any free port)
#   BENCH_PROXY_PORT   port of the proxy (default 16380, or any free port)
#   BENCH_PROXY_NOAUDIT_PORT  port of the proxy without audit (default 16383, or any free port)
#   BENCH_PROXY_ACL_PORT  port of the proxy enforcing ACL rules (default 16384, or any free port)
#   BENCH_TWEMPROXY    1 (default) to bench twemproxy too, 0 to skip it; it is skipped anyway when
#                      the nutcracker package cannot be installed or nutcracker does not start
#   BENCH_TWEMPROXY_PORT  port of twemproxy (default 16381, or any free port); its stats port is
#                      the next free one from 16382
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

REQUESTS=${BENCH_REQUESTS:-200000}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-50}
PIPELINES=${BENCH_PIPELINES:-"1 16"}
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
BIG_MIB=${BENCH_BIG_MIB:-64}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for value in "$REQUESTS" "$ROUNDS" "$CLIENTS" "$IDLE_CONNS" "$BIG_MIB"; do
  [[ $value =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got \"$value\""
done
command -v python3 >/dev/null || die "python3 is required"
CLK_TCK=$(getconf CLK_TCK)
[[ $CLK_TCK =~ ^[1-9][0-9]*$ ]] || die "getconf CLK_TCK gave \"$CLK_TCK\""

# ---- prerequisites -----------------------------------------------------------------------------
bash scripts/ensure-redis.sh
log "building the proxy (cargo build --release)"
cargo build --release
PROXY_BIN=target/release/redis-audit-proxy
[[ -x $PROXY_BIN ]] || die "$PROXY_BIN was not built"

# twemproxy is the reference arm: a proxy that audits nothing. Optional: without it the bench
# still measures direct and proxy, and says twemproxy was skipped.
TWEMPROXY=0
TWEMPROXY_NOTE="skipped (BENCH_TWEMPROXY=0)"
NUTCRACKER_BIN=""
if [[ ${BENCH_TWEMPROXY:-1} != 0 ]]; then
  if bash scripts/ensure-twemproxy.sh; then
    NUTCRACKER_BIN=$(command -v nutcracker || echo /usr/sbin/nutcracker)
    TWEMPROXY=1
  else
    TWEMPROXY_NOTE="skipped (the nutcracker package could not be installed)"
    log "twemproxy: $TWEMPROXY_NOTE"
  fi
fi

# Each proxied client holds two sockets (client + upstream); the test client holds one more.
want_fds=$((IDLE_CONNS * 2 + 256))
if (($(ulimit -n) < want_fds)); then
  ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if (($(ulimit -n) < want_fds)); then
  IDLE_CONNS=$((($(ulimit -n) - 256) / 2))
  log "open-file limit is $(ulimit -n): measuring with $IDLE_CONNS idle connections"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/redis-audit-proxy-bench.XXXXXX")
OUT=$ROOT/target/bench
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.json "$OUT"/*.stderr "$OUT"/report.md

REDIS_PID=""
PROXY_PID=""
NOAUDIT_PID=""
ACL_PID=""
ACL_PORT=""
TLS_REDIS_PID=""
TLS_PROXY_PID=""
TWEMPROXY_PID=""

stop_pid() {
  local pid=$1
  [[ -n $pid ]] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  stop_pid "$TWEMPROXY_PID"
  stop_pid "$NOAUDIT_PID"
  stop_pid "$ACL_PID"
  stop_pid "$TLS_PROXY_PID"
  stop_pid "$TLS_REDIS_PID"
  stop_pid "$PROXY_PID"
  stop_pid "$REDIS_PID"
  TWEMPROXY_PID=""
  NOAUDIT_PID=""
  ACL_PID=""
  PROXY_PID=""
  REDIS_PID=""
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints $1 when nothing listens on it on loopback, else a port the kernel picks.
pick_port() {
  python3 - "$1" <<'PY'
import socket, sys

def bindable(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

preferred = int(sys.argv[1])
if bindable(preferred):
    print(preferred)
else:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()
PY
}

# await_pong PORT PID: 0 once PORT answers PING, 1 if PID exited first, 2 after 10 s.
await_pong() {
  local port=$1 pid=$2 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true) == PONG ]]; then
      return 0
    fi
    sleep 0.1
  done
  return 2
}

# wait_for_pong PORT PID NAME LOGFILE
wait_for_pong() {
  local port=$1 pid=$2 name=$3 logfile=$4 status=0
  await_pong "$port" "$pid" || status=$?
  ((status == 0)) && return 0
  cat "$logfile" >&2 || true
  ((status == 1)) && die "$name exited during startup"
  die "$name did not answer PING on port $port within 10 s"
}

start_redis() {
  REDIS_PORT=$(pick_port "${BENCH_REDIS_PORT:-16379}")
  REDIS_CMD=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no)
  "${REDIS_CMD[@]}" --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no &
  REDIS_PID=$!
  wait_for_pong "$REDIS_PORT" "$REDIS_PID" redis-server "$WORK/redis.log"
}

start_proxy() {
  PROXY_PORT=$(pick_port "${BENCH_PROXY_PORT:-16380}")
  [[ $PROXY_PORT != "$REDIS_PORT" ]] || PROXY_PORT=$(pick_port 0)
  PROXY_CMD=("$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$REDIS_PORT" --admin 127.0.0.1:0 --audit-dir "$WORK/audit" --log-level warn)
  "${PROXY_CMD[@]}" 2>>"$WORK/proxy.log" &
  PROXY_PID=$!
  wait_for_pong "$PROXY_PORT" "$PROXY_PID" redis-audit-proxy "$WORK/proxy.log"
}

restart_proxy() {
  stop_pid "$PROXY_PID"
  PROXY_PID=""
  start_proxy
}

# The same proxy with the audit trail disabled by a config file (only `[audit] enabled = false`;
# every other key is the built-in default, as for the `proxy` arm), run from $WORK so that the
# command line and its config file name are the ones reported.
start_proxy_noaudit() {
  NOAUDIT_PORT=$(pick_port "${BENCH_PROXY_NOAUDIT_PORT:-16383}")
  while [[ $NOAUDIT_PORT == "$REDIS_PORT" || $NOAUDIT_PORT == "$PROXY_PORT" ]]; do
    NOAUDIT_PORT=$(pick_port 0)
  done
  NOAUDIT_CONF=$'[audit]\nenabled = false'
  printf '%s\n' "$NOAUDIT_CONF" >"$WORK/proxy-noaudit.toml"
  NOAUDIT_CMD=("$PROXY_BIN" --config proxy-noaudit.toml --listen "127.0.0.1:$NOAUDIT_PORT" --upstream "127.0.0.1:$REDIS_PORT" --admin 127.0.0.1:0 --log-level warn)
  (cd "$WORK" && exec "$ROOT/$PROXY_BIN" "${NOAUDIT_CMD[@]:1}") 2>>"$WORK/proxy-noaudit.log" &
  NOAUDIT_PID=$!
  wait_for_pong "$NOAUDIT_PORT" "$NOAUDIT_PID" "redis-audit-proxy (audit off)" "$WORK/proxy-noaudit.log"
  # It must say it is not auditing, and must not have opened an audit directory.
  grep -q 'audit.enabled = false' "$WORK/proxy-noaudit.log" ||
    { cat "$WORK/proxy-noaudit.log" >&2; die "the no-audit proxy did not report audit.enabled = false"; }
}

# The auditing proxy with a users file in enforce mode: a default user of 20 rules (key and
# channel patterns, categories, first-args, selectors) that allows SET and GET on key:*.
start_proxy_acl() {
  ACL_PORT=$(pick_port "${BENCH_PROXY_ACL_PORT:-16384}")
  while [[ $ACL_PORT == "$REDIS_PORT" || $ACL_PORT == "$PROXY_PORT" || $ACL_PORT == "$NOAUDIT_PORT" ]]; do
    ACL_PORT=$(pick_port 0)
  done
  ACL_USERS='user default on nopass ~key:* ~counter:* %R~cache:* %W~out:* &bench:* -@all +@read +@string +@hash +@list +@connection -getdel +select|0 +config|get -flushall (~s? +@stream) (~other:* +mget)'
  ACL_CONF=$'[auth]\nusers_file = "users.acl"\n[acl]\nmode = "enforce"\n[audit]\ndir = "audit-acl"'
  printf '%s\n' "$ACL_USERS" >"$WORK/users.acl"
  printf '%s\n' "$ACL_CONF" >"$WORK/proxy-acl.toml"
  ACL_CMD=("$PROXY_BIN" --config proxy-acl.toml --listen "127.0.0.1:$ACL_PORT" --upstream "127.0.0.1:$REDIS_PORT" --admin 127.0.0.1:0 --log-level warn)
  (cd "$WORK" && exec "$ROOT/$PROXY_BIN" "${ACL_CMD[@]:1}") 2>>"$WORK/proxy-acl.log" &
  ACL_PID=$!
  wait_for_pong "$ACL_PORT" "$ACL_PID" "redis-audit-proxy (ACL enforce)" "$WORK/proxy-acl.log"
}

# Runs nutcracker in the foreground of a background job (its pid is $!; without -d it writes no
# pid file), from $WORK so that the command line and its config file name are the ones reported.
# Sets TWEMPROXY=0 and TWEMPROXY_NOTE when it does not start.
start_twemproxy() {
  local status=0
  TWEMPROXY_PORT=$(pick_port "${BENCH_TWEMPROXY_PORT:-16381}")
  while [[ $TWEMPROXY_PORT == "$REDIS_PORT" || $TWEMPROXY_PORT == "$PROXY_PORT" ||
    $TWEMPROXY_PORT == "$NOAUDIT_PORT" || $TWEMPROXY_PORT == "$ACL_PORT" ]]; do
    TWEMPROXY_PORT=$(pick_port 0)
  done
  TWEMPROXY_STATS_PORT=$(pick_port 16382)
  while [[ $TWEMPROXY_STATS_PORT == "$TWEMPROXY_PORT" || $TWEMPROXY_STATS_PORT == "$REDIS_PORT" ||
    $TWEMPROXY_STATS_PORT == "$PROXY_PORT" || $TWEMPROXY_STATS_PORT == "$NOAUDIT_PORT" ||
    $TWEMPROXY_STATS_PORT == "$ACL_PORT" ]]; do
    TWEMPROXY_STATS_PORT=$(pick_port 0)
  done
  TWEMPROXY_CONF="bench:
  listen: 127.0.0.1:$TWEMPROXY_PORT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
    - 127.0.0.1:$REDIS_PORT:1"
  printf '%s\n' "$TWEMPROXY_CONF" >"$WORK/nutcracker.yml"
  TWEMPROXY_CMD=(nutcracker -c nutcracker.yml -o nutcracker.log -s "$TWEMPROXY_STATS_PORT" -a 127.0.0.1)
  (cd "$WORK" && exec "$NUTCRACKER_BIN" "${TWEMPROXY_CMD[@]:1}") &
  TWEMPROXY_PID=$!
  await_pong "$TWEMPROXY_PORT" "$TWEMPROXY_PID" || status=$?
  if ((status != 0)); then
    cat "$WORK/nutcracker.log" >&2 || true
    stop_pid "$TWEMPROXY_PID"
    TWEMPROXY_PID=""
    TWEMPROXY=0
    if ((status == 1)); then
      TWEMPROXY_NOTE="skipped (nutcracker exited during startup)"
    else
      TWEMPROXY_NOTE="skipped (nutcracker did not answer PING within 10 s)"
    fi
    log "twemproxy: $TWEMPROXY_NOTE"
  fi
}

start_redis
start_proxy
start_proxy_noaudit
start_proxy_acl
log "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)," \
  "proxy on 127.0.0.1:$PROXY_PORT (pid $PROXY_PID, audit to $WORK/audit)," \
  "proxy-noaudit on 127.0.0.1:$NOAUDIT_PORT (pid $NOAUDIT_PID)," \
  "proxy-acl on 127.0.0.1:$ACL_PORT (pid $ACL_PID)"
if ((TWEMPROXY)); then
  start_twemproxy
fi
if ((TWEMPROXY)); then
  TWEMPROXY_NOTE=$("$NUTCRACKER_BIN" -V 2>&1 | sed -n 's/^This is nutcracker-//p' | head -n 1)
  TWEMPROXY_NOTE="nutcracker ${TWEMPROXY_NOTE:-(unknown version)}"
  log "twemproxy ($TWEMPROXY_NOTE) on 127.0.0.1:$TWEMPROXY_PORT (pid $TWEMPROXY_PID)"
fi
TARGETS="direct proxy proxy-acl proxy-noaudit"
if ((TWEMPROXY)); then TARGETS="direct proxy proxy-acl proxy-noaudit twemproxy"; fi

# ---- 1. throughput and latency -----------------------------------------------------------------
# Prints its arguments as one shell command line, quoting only the words that need it.
shell_line() {
  local word line=""
  for word in "$@"; do
    if [[ ! $word =~ ^[A-Za-z0-9_./:,=+-]+$ ]]; then word=$(printf '%q' "$word"); fi
    line+="${line:+ }$word"
  done
  printf '%s\n' "$line"
}

bench_cmd() { # bench_cmd PORT PIPELINE -> BENCH_CMD
  BENCH_CMD=(redis-benchmark -h 127.0.0.1 -p "$1" -c "$CLIENTS" -n "$REQUESTS" -P "$2" -t set,get --csv)
}

target_port() { # target_port TARGET -> PORT
  case $1 in
    direct) PORT=$REDIS_PORT ;;
    proxy) PORT=$PROXY_PORT ;;
    proxy-noaudit) PORT=$NOAUDIT_PORT ;;
    proxy-acl) PORT=$ACL_PORT ;;
    twemproxy) PORT=$TWEMPROXY_PORT ;;
  esac
}

{
  shell_line "${REDIS_CMD[@]}"
  shell_line "${PROXY_CMD[@]}"
  printf "cat >proxy-noaudit.toml <<'EOF'\n%s\nEOF\n" "$NOAUDIT_CONF"
  shell_line "${NOAUDIT_CMD[@]}"
  printf "cat >users.acl <<'EOF'\n%s\nEOF\n" "$ACL_USERS"
  printf "cat >proxy-acl.toml <<'EOF'\n%s\nEOF\n" "$ACL_CONF"
  shell_line "${ACL_CMD[@]}"
  if ((TWEMPROXY)); then
    printf "cat >nutcracker.yml <<'EOF'\n%s\nEOF\n" "$TWEMPROXY_CONF"
    shell_line "${TWEMPROXY_CMD[@]}"
  fi
  for pipeline in $PIPELINES; do
    for target in $TARGETS; do
      target_port "$target"
      bench_cmd "$PORT" "$pipeline"
      shell_line "${BENCH_CMD[@]}"
    done
  done
} >"$WORK/commands.txt"

# CPU time in clock ticks (utime + stime, fields 14 and 15 of /proc/PID/stat) -> TICKS. The
# fields are counted after the ")" closing the command name, which may itself hold spaces.
# No command substitution here: a forked subshell would add to this shell's children's time.
proc_ticks() {
  local stat fields
  read -r stat <"/proc/$1/stat"
  read -r -a fields <<<"${stat##*) }"
  TICKS=$((fields[11] + fields[12]))
}
# CPU time of this shell's waited-for children (cutime + cstime, fields 16 and 17) -> TICKS:
# its growth over a redis-benchmark run (run in the foreground) is that run's CPU time.
children_ticks() {
  local stat fields
  read -r stat <"/proc/$$/stat"
  read -r -a fields <<<"${stat##*) }"
  TICKS=$((fields[13] + fields[14]))
}

# Total size of the audit files the `proxy` arm (or the arm whose directory is $1) writes ->
# AUDIT_BYTES.
audit_bytes() {
  local files=("${1:-$WORK/audit}"/*.log)
  AUDIT_BYTES=0
  [[ -e ${files[0]} ]] || return 0
  AUDIT_BYTES=$(stat -c %s "${files[@]}" | awk '{ total += $1 } END { print total + 0 }')
}

# Waits until the auditing proxy's writer thread has caught up: the audit files have not grown
# for 0.3 s (three readings 0.1 s apart). -> AUDIT_LAG_MS, the time from the call to the last
# growth seen (0.1 s resolution). Gives up after 60 s.
await_audit_settled() {
  local start=${EPOCHREALTIME/./} now last_change previous=-1 stable=0
  last_change=$start
  while ((stable < 3)); do
    audit_bytes "${1:-}"
    now=${EPOCHREALTIME/./}
    if ((AUDIT_BYTES == previous)); then
      stable=$((stable + 1))
    else
      stable=0
      previous=$AUDIT_BYTES
      last_change=$now
    fi
    if ((now - start > 60000000)); then
      log "warning: the audit trail was still growing 60 s after the run"
      break
    fi
    ((stable >= 3)) || sleep 0.1
  done
  AUDIT_LAG_MS=$(((last_change - start) / 1000))
}

check_alive() {
  kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; die "the proxy died"; }
  kill -0 "$NOAUDIT_PID" 2>/dev/null || { cat "$WORK/proxy-noaudit.log" >&2; die "the no-audit proxy died"; }
  kill -0 "$ACL_PID" 2>/dev/null || { cat "$WORK/proxy-acl.log" >&2; die "the ACL proxy died"; }
  if ((TWEMPROXY)); then
    kill -0 "$TWEMPROXY_PID" 2>/dev/null || { cat "$WORK/nutcracker.log" >&2; die "twemproxy died"; }
  fi
  kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis.log" >&2; die "redis-server died"; }
}

started=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  for pipeline in $PIPELINES; do
    for target in $TARGETS; do
      target_port "$target"
      case $target in
        proxy) middle_pid=$PROXY_PID ;;
        proxy-noaudit) middle_pid=$NOAUDIT_PID ;;
        proxy-acl) middle_pid=$ACL_PID ;;
        twemproxy) middle_pid=$TWEMPROXY_PID ;;
        *) middle_pid="" ;;
      esac
      bench_cmd "$PORT" "$pipeline"
      run=$target-P$pipeline-r$round
      log "round $round/$ROUNDS, pipeline $pipeline, $target"
      proc_ticks "$REDIS_PID"
      redis_before=$TICKS
      middle_before=0
      if [[ -n $middle_pid ]]; then
        proc_ticks "$middle_pid"
        middle_before=$TICKS
      fi
      children_ticks
      client_before=$TICKS
      # stdout is the CSV; stderr (e.g. "WARNING: Could not fetch server CONFIG", which
      # twemproxy provokes by refusing CONFIG) is kept apart.
      "${BENCH_CMD[@]}" >"$OUT/$run.csv" 2>"$OUT/$run.stderr"
      children_ticks
      client_after=$TICKS
      proc_ticks "$REDIS_PID"
      redis_after=$TICKS
      middle_after=0
      audit_lag=null
      if [[ $target == proxy ]]; then
        await_audit_settled
        audit_lag=$AUDIT_LAG_MS
      elif [[ $target == proxy-acl ]]; then
        await_audit_settled "$WORK/audit-acl"
        audit_lag=$AUDIT_LAG_MS
      fi
      if [[ -n $middle_pid ]]; then
        proc_ticks "$middle_pid"
        middle_after=$TICKS
      fi
      printf '{"requests": %d, "clk_tck": %d, "redis_ticks": %d, "middle_ticks": %s, "client_ticks": %d, "audit_lag_ms": %s}\n' \
        $((2 * REQUESTS)) "$CLK_TCK" $((redis_after - redis_before)) \
        "$([[ -n $middle_pid ]] && echo $((middle_after - middle_before)) || echo null)" \
        $((client_after - client_before)) "$audit_lag" >"$OUT/cpu-$run.json"
      grep -v 'Could not fetch server CONFIG' "$OUT/$run.stderr" >&2 || true
      check_alive
    done
  done
done
log "redis-benchmark runs took $((SECONDS - started)) s"
if ((TWEMPROXY)); then
  stop_pid "$TWEMPROXY_PID"
  TWEMPROXY_PID=""
fi
stop_pid "$NOAUDIT_PID"
NOAUDIT_PID=""
# Every command the ACL arm ran was allowed: a denial would mean the rules do not fit the bench.
acl_denials=$({ grep -h -c '"action":"acl_denied"' "$WORK"/audit-acl/*.log /dev/null || true; } |
  awk '{ n += $1 } END { print n + 0 }')
stop_pid "$ACL_PID"
ACL_PID=""
((acl_denials == 0)) || die "the ACL arm denied $acl_denials commands: its users file does not fit the benchmark"

# The audit trail the `proxy` arm wrote over the throughput rounds (the proxy is still running
# and its writer has caught up; the fresh proxies below add to the same directory).
await_audit_settled
read -r audit_lines audit_bytes < <(cat "$WORK"/audit/*.log | wc -l -c)
audit_files=$(find "$WORK/audit" -maxdepth 1 -name '*.log' | wc -l)
audit_commands=$({ grep -c '"kind":"command"' "$WORK"/audit/*.log /dev/null || true; } |
  awk -F: '{ n += $NF } END { print n + 0 }')
# Command records dropped because the writer's queue was full (`loss` records).
audit_lost=$({ grep -h '"action":"loss"' "$WORK"/audit/*.log /dev/null || true; } |
  python3 -c 'import json, sys; print(sum(json.loads(l)["lost"]["count"] for l in sys.stdin))')
printf '{"lines": %d, "bytes": %d, "files": %d, "command_records": %d, "lost_records": %d}\n' \
  "$audit_lines" "$audit_bytes" "$audit_files" "$audit_commands" "$audit_lost" >"$OUT/audit.json"
log "audit trail: $audit_lines lines, $audit_bytes bytes in $audit_files file(s)"

# ---- 2. memory per idle connection (fresh proxy) -----------------------------------------------
restart_proxy
log "opening $IDLE_CONNS idle connections to the proxy (pid $PROXY_PID)"
python3 - "$PROXY_PID" "$PROXY_PORT" "$IDLE_CONNS" "$OUT/idle.json" <<'PY'
import json, os, socket, sys, time

pid, port, count, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def status_kib(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"{field} not in /proc/{pid}/status")

def open_fds():
    return len(os.listdir(f"/proc/{pid}/fd"))

def settle():
    time.sleep(1.0)

settle()
rss_before = status_kib("VmRSS")
fds_before = open_fds()

socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
# Wait until the proxy has accepted every client and opened its upstream connection.
deadline = time.time() + 60
while open_fds() < fds_before + 2 * count:
    if time.time() > deadline:
        raise SystemExit(f"proxy holds {open_fds() - fds_before} new descriptors, expected {2 * count}")
    time.sleep(0.05)
settle()
rss_connected = status_kib("VmRSS")

# One command each, so every connection has been through a full request/reply.
for s in socks:
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
for s in socks:
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            raise SystemExit("proxy closed an idle connection")
        got += chunk
    if got != b"+PONG\r\n":
        raise SystemExit(f"unexpected reply {got!r}")
settle()
rss_after_ping = status_kib("VmRSS")

for s in socks:
    s.close()

result = {
    "connections": count,
    "rss_before_kib": rss_before,
    "rss_connected_kib": rss_connected,
    "rss_after_ping_kib": rss_after_ping,
    "kib_per_conn_connected": (rss_connected - rss_before) / count,
    "kib_per_conn_after_ping": (rss_after_ping - rss_before) / count,
}
with open(out, "w") as f:
    json.dump(result, f)
PY

# ---- 3. one big value (fresh proxy) ------------------------------------------------------------
restart_proxy
log "SET/GET of a $BIG_MIB MiB value through the proxy (pid $PROXY_PID)"
python3 - "$PROXY_PID" "$PROXY_PORT" "$BIG_MIB" "$OUT/big.json" <<'PY'
import json, socket, sys, time

pid, port, mib, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
size = mib * 1024 * 1024

def status_kib(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"{field} not in /proc/{pid}/status")

time.sleep(1.0)
hwm_before = status_kib("VmHWM")
rss_before = status_kib("VmRSS")

payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
s = socket.create_connection(("127.0.0.1", port))
reader = s.makefile("rb", buffering=1 << 20)

started = time.monotonic()
s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % size)
s.sendall(payload)
s.sendall(b"\r\n")
reply = reader.readline()
if reply != b"+OK\r\n":
    raise SystemExit(f"SET big: unexpected reply {reply[:200]!r}")
set_seconds = time.monotonic() - started
hwm_after_set = status_kib("VmHWM")

started = time.monotonic()
s.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
header = reader.readline()
if header != b"$%d\r\n" % size:
    raise SystemExit(f"GET big: unexpected reply {header[:200]!r}")
body = reader.read(size + 2)
get_seconds = time.monotonic() - started
if body[:-2] != payload or body[-2:] != b"\r\n":
    raise SystemExit("GET big: the value came back different")
hwm_after_get = status_kib("VmHWM")
time.sleep(1.0)
rss_after = status_kib("VmRSS")
s.close()

result = {
    "mib": mib,
    "hwm_before_kib": hwm_before,
    "rss_before_kib": rss_before,
    "hwm_after_set_kib": hwm_after_set,
    "hwm_after_get_kib": hwm_after_get,
    "rss_after_kib": rss_after,
    "set_seconds": set_seconds,
    "get_seconds": get_seconds,
}
with open(out, "w") as f:
    json.dump(result, f)
PY
kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; die "the proxy died"; }

# ---- 4. TLS on both sides ----------------------------------------------------------------------
TLS_DIR=$WORK/tls
mkdir -p "$TLS_DIR"
(
  cd "$TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
) || die "openssl could not make the TLS certificates"
TLS_REDIS_PORT=$(pick_port 16385)
TLS_REDIS_CMD=(redis-server --port 0 --tls-port "$TLS_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
  --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key"
  --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no)
"${TLS_REDIS_CMD[@]}" --dir "$WORK" --logfile "$WORK/redis-tls.log" --daemonize no &
TLS_REDIS_PID=$!
TLS_CLI=(redis-cli --tls --cacert "$TLS_DIR/ca.pem" -h 127.0.0.1)
await_tls_pong() { # await_tls_pong PORT PID NAME LOG
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$2" 2>/dev/null || { cat "$4" >&2; die "$3 exited during startup"; }
    [[ $("${TLS_CLI[@]}" -p "$1" ping 2>/dev/null || true) == PONG ]] && return 0
    sleep 0.1
  done
  cat "$4" >&2
  die "$3 did not answer PING over TLS on port $1 within 10 s"
}
await_tls_pong "$TLS_REDIS_PORT" "$TLS_REDIS_PID" "redis-server (TLS)" "$WORK/redis-tls.log"
TLS_PROXY_PORT=$(pick_port 16386)
TLS_PROXY_CONF="[tls]
listen = \"127.0.0.1:$TLS_PROXY_PORT\"
cert_file = \"tls/server.pem\"
key_file = \"tls/server.key\"
[upstream.tls]
ca_file = \"tls/ca.pem\"
server_name = \"localhost\"
[audit]
dir = \"audit-tls\""
printf '%s\n' "$TLS_PROXY_CONF" >"$WORK/proxy-tls.toml"
TLS_PROXY_CMD=("$PROXY_BIN" --config proxy-tls.toml --listen "127.0.0.1:$(pick_port 0)" --upstream "127.0.0.1:$TLS_REDIS_PORT" --admin 127.0.0.1:0 --log-level warn)
(cd "$WORK" && exec "$ROOT/$PROXY_BIN" "${TLS_PROXY_CMD[@]:1}") 2>>"$WORK/proxy-tls.log" &
TLS_PROXY_PID=$!
await_tls_pong "$TLS_PROXY_PORT" "$TLS_PROXY_PID" "redis-audit-proxy (TLS)" "$WORK/proxy-tls.log"
for ((round = 1; round <= ROUNDS; round++)); do
  for target in tls-direct tls-proxy; do
    port=$TLS_REDIS_PORT
    [[ $target == tls-proxy ]] && port=$TLS_PROXY_PORT
    log "TLS round $round/$ROUNDS, pipeline 1, $target"
    proc_ticks "$TLS_REDIS_PID"
    redis_before=$TICKS
    proc_ticks "$TLS_PROXY_PID"
    proxy_before=$TICKS
    children_ticks
    client_before=$TICKS
    redis-benchmark --tls --cacert "$TLS_DIR/ca.pem" -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -P 1 -t set,get --csv \
      >"$OUT/$target-P1-r$round.csv" 2>"$OUT/$target-P1-r$round.stderr"
    children_ticks
    client_after=$TICKS
    proc_ticks "$TLS_REDIS_PID"
    redis_after=$TICKS
    proc_ticks "$TLS_PROXY_PID"
    proxy_after=$TICKS
    printf '{"requests": %d, "clk_tck": %d, "redis_ticks": %d, "proxy_ticks": %d, "client_ticks": %d}\n' \
      $((2 * REQUESTS)) "$CLK_TCK" $((redis_after - redis_before)) $((proxy_after - proxy_before)) \
      $((client_after - client_before)) >"$OUT/cpu-$target-P1-r$round.json"
    kill -0 "$TLS_PROXY_PID" 2>/dev/null || { cat "$WORK/proxy-tls.log" >&2; die "the TLS proxy died"; }
  done
done
{
  printf '%s\n' "# TLS (certificates: openssl req/x509, CA + server certificate for localhost and 127.0.0.1)"
  shell_line "${TLS_REDIS_CMD[@]}"
  printf "cat >proxy-tls.toml <<'EOF'\n%s\nEOF\n" "$TLS_PROXY_CONF"
  shell_line "${TLS_PROXY_CMD[@]}"
  for port in "$TLS_REDIS_PORT" "$TLS_PROXY_PORT"; do
    shell_line redis-benchmark --tls --cacert tls/ca.pem -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -P 1 -t set,get --csv
  done
} >>"$WORK/commands.txt"
stop_pid "$TLS_PROXY_PID"
stop_pid "$TLS_REDIS_PID"
TLS_PROXY_PID=""
TLS_REDIS_PID=""

# ---- report ------------------------------------------------------------------------------------
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then git_rev="$git_rev (modified)"; fi
BENCH_META_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
BENCH_META_REV=$git_rev
BENCH_META_CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
BENCH_META_CORES=$(nproc)
BENCH_META_KERNEL=$(uname -r)
BENCH_META_REDIS=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
BENCH_META_RUSTC=$(rustc --version 2>/dev/null || echo unknown)
BENCH_META_TWEMPROXY=$TWEMPROXY_NOTE
export BENCH_META_DATE BENCH_META_REV BENCH_META_CPU BENCH_META_CORES BENCH_META_KERNEL \
  BENCH_META_REDIS BENCH_META_RUSTC BENCH_META_TWEMPROXY

python3 - "$OUT" "$WORK/commands.txt" "$ROUNDS" "$PIPELINES" "$REQUESTS" "$CLIENTS" "$TARGETS" <<'PY'
import csv, json, os, statistics, sys

out, commands_file, rounds, pipelines, requests, clients, targets = sys.argv[1:8]
rounds = int(rounds)
requests = int(requests)
pipelines = [int(p) for p in pipelines.split()]
targets = targets.split()
twem = "twemproxy" in targets
commands = [line.rstrip() for line in open(commands_file) if line.strip()]
DASH = "—"
ARMS = ("direct", "proxy", "proxy-noaudit", "twemproxy")
AUDIT_TARGET = 0.90  # proxy rps / proxy-noaudit rps, at pipeline 1 and 16

def load(target, pipeline):
    rows = {}
    if target not in targets:
        return rows
    for r in range(1, rounds + 1):
        with open(os.path.join(out, f"{target}-P{pipeline}-r{r}.csv")) as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["test"], []).append(row)
    return rows

def med(rows, key):
    if not rows:
        return None
    return statistics.median(float(row[key]) for row in rows)

def cpu_runs(target, pipeline):
    if target not in targets:
        return []
    return [json.load(open(os.path.join(out, f"cpu-{target}-P{pipeline}-r{r}.json")))
            for r in range(1, rounds + 1)]

def us_per_request(runs, key):
    """Median over the rounds of CPU microseconds per request for one process."""
    if not runs or runs[0][key] is None:
        return None
    return statistics.median(run[key] * 1e6 / run["clk_tck"] / run["requests"] for run in runs)

def fmt(value, spec):
    return DASH if value is None else format(value, spec)

def ratio(a, b):
    return a / b if a is not None and b else None

table = []
for pipeline in pipelines:
    loaded = {arm: load(arm, pipeline) for arm in ARMS}
    for test in ("SET", "GET"):
        row = {"pipeline": pipeline, "test": test}
        for arm in ARMS:
            rows = loaded[arm].get(test, [])
            row[f"rps_{arm}"] = med(rows, "rps")
            row[f"p50_{arm}"] = med(rows, "p50_latency_ms")
            row[f"p99_{arm}"] = med(rows, "p99_latency_ms")
            row[f"rps_all_{arm}"] = [float(x["rps"]) for x in rows]
        for arm in ("proxy", "proxy-noaudit", "twemproxy"):
            row[f"ratio_{arm}"] = ratio(row[f"rps_{arm}"], row["rps_direct"])
        row["audit_overhead"] = ratio(row["rps_proxy"], row["rps_proxy-noaudit"])
        # Per round: the two proxy arms run back to back, so each round gives a paired ratio.
        row["audit_overhead_all"] = [p / n for p, n in zip(row["rps_all_proxy"],
                                                           row["rps_all_proxy-noaudit"])]
        table.append(row)

cpu_table = []
for pipeline in pipelines:
    runs = {arm: cpu_runs(arm, pipeline) for arm in ARMS}
    row = {"pipeline": pipeline,
           "client": [us_per_request(runs[arm], "client_ticks") for arm in ARMS if arm in targets],
           "requests": runs["direct"][0]["requests"],
           "clk_tck": runs["direct"][0]["clk_tck"]}
    for arm in ARMS:
        row[f"redis_{arm}"] = us_per_request(runs[arm], "redis_ticks")
        if arm != "direct":
            row[arm] = us_per_request(runs[arm], "middle_ticks")
    cpu_table.append(row)
cpu_resolution = 1e6 / cpu_table[0]["clk_tck"] / cpu_table[0]["requests"]
audit_lags = [run["audit_lag_ms"] for p in pipelines for run in cpu_runs("proxy", p)]

idle = json.load(open(os.path.join(out, "idle.json")))
big = json.load(open(os.path.join(out, "big.json")))
audit = json.load(open(os.path.join(out, "audit.json")))
mib = 1024.0
big_peak_mib = (big["hwm_after_get_kib"] - big["hwm_before_kib"]) / mib
big_set_mib = (big["hwm_after_set_kib"] - big["hwm_before_kib"]) / mib
big_multiple = big_peak_mib / big["mib"]
audit_sent = 2 * requests * rounds * len(pipelines)  # SET + GET through the `proxy` arm
audit_per_line = audit["bytes"] / audit["lines"] if audit["lines"] else None
audit_per_command = audit["bytes"] / audit["command_records"] if audit["command_records"] else None

rps_headers = ["pipeline", "test", "direct rps", "proxy rps (audit on)", "proxy rps (audit off)",
               "twemproxy rps", "proxy/direct", "proxy-noaudit/direct", "twemproxy/direct",
               "audit overhead (proxy/proxy-noaudit)"]
def rps_cells(row):
    return [f"-P {row['pipeline']}", row["test"],
            fmt(row["rps_direct"], ",.0f"), fmt(row["rps_proxy"], ",.0f"),
            fmt(row["rps_proxy-noaudit"], ",.0f"), fmt(row["rps_twemproxy"], ",.0f"),
            fmt(row["ratio_proxy"], ".2f"), fmt(row["ratio_proxy-noaudit"], ".2f"),
            fmt(row["ratio_twemproxy"], ".2f"), fmt(row["audit_overhead"], ".2f")]

lat_headers = ["pipeline", "test", "p50 direct", "p50 proxy", "p50 proxy-noaudit", "p50 twemproxy",
               "p99 direct", "p99 proxy", "p99 proxy-noaudit", "p99 twemproxy"]
def lat_cells(row):
    return ([f"-P {row['pipeline']}", row["test"]]
            + [fmt(row[f"p50_{arm}"], ".3f") for arm in ARMS]
            + [fmt(row[f"p99_{arm}"], ".3f") for arm in ARMS])

client_arms = " / ".join(arm for arm in ARMS if arm in targets)
cpu_headers = ["pipeline", "redis direct", "redis behind proxy", "proxy (audit on)",
               "redis behind proxy-noaudit", "proxy (audit off)", "redis behind twemproxy",
               "twemproxy", f"redis-benchmark ({client_arms})"]
def cpu_cells(row):
    return [f"-P {row['pipeline']}",
            fmt(row["redis_direct"], ".2f"), fmt(row["redis_proxy"], ".2f"), fmt(row["proxy"], ".2f"),
            fmt(row["redis_proxy-noaudit"], ".2f"), fmt(row["proxy-noaudit"], ".2f"),
            fmt(row["redis_twemproxy"], ".2f"), fmt(row["twemproxy"], ".2f"),
            " / ".join(fmt(x, ".2f") for x in row["client"])]

def verdict(row):
    value = row["audit_overhead"]
    if value is None:
        return f"-P {row['pipeline']} {row['test']} {DASH}"
    return f"-P {row['pipeline']} {row['test']} {value:.2f} ({'met' if value >= AUDIT_TARGET else 'not met'})"
audit_verdicts = [verdict(row) for row in table if row["pipeline"] in (1, 16)]

# The ACL arm: the auditing proxy plus the policy check, paired with the `proxy` arm per round.
acl_rows = []
if "proxy-acl" in targets:
    for pipeline in pipelines:
        loaded_acl = load("proxy-acl", pipeline)
        loaded_proxy = load("proxy", pipeline)
        for test in ("SET", "GET"):
            acl_rps = [float(x["rps"]) for x in loaded_acl.get(test, [])]
            proxy_rps = [float(x["rps"]) for x in loaded_proxy.get(test, [])]
            paired = [a / p for a, p in zip(acl_rps, proxy_rps) if p]
            acl_rows.append({"pipeline": pipeline, "test": test,
                             "proxy": med([{"v": v} for v in proxy_rps], "v"),
                             "acl": med([{"v": v} for v in acl_rps], "v"),
                             "ratio": statistics.median(paired) if paired else None,
                             "all": paired})
# TLS on both sides, pipeline 1, paired per round.
TLS_TARGET = 0.85
tls_rows = []
for test in ("SET", "GET"):
    def tls_rps(target):
        values = []
        for r in range(1, rounds + 1):
            path = os.path.join(out, f"{target}-P1-r{r}.csv")
            if os.path.exists(path):
                values += [float(x["rps"]) for x in csv.DictReader(open(path)) if x["test"] == test]
        return values
    direct_rps, proxy_rps = tls_rps("tls-direct"), tls_rps("tls-proxy")
    paired = [p / d for p, d in zip(proxy_rps, direct_rps) if d]
    tls_rows.append({"test": test,
                     "direct": statistics.median(direct_rps) if direct_rps else None,
                     "proxy": statistics.median(proxy_rps) if proxy_rps else None,
                     "ratio": statistics.median(paired) if paired else None,
                     "all": paired})
def tls_cpu(target, key):
    runs = []
    for r in range(1, rounds + 1):
        path = os.path.join(out, f"cpu-{target}-P1-r{r}.json")
        if os.path.exists(path):
            runs.append(json.load(open(path)))
    return us_per_request(runs, key)
tls_cpu_line = ("CPU µs per request at pipeline 1 over TLS (SET then GET, medians): "
                f"direct: redis-server {fmt(tls_cpu('tls-direct', 'redis_ticks'), '.2f')}, "
                f"redis-benchmark {fmt(tls_cpu('tls-direct', 'client_ticks'), '.2f')}; "
                f"through the proxy: redis-server {fmt(tls_cpu('tls-proxy', 'redis_ticks'), '.2f')}, "
                f"proxy {fmt(tls_cpu('tls-proxy', 'proxy_ticks'), '.2f')}, "
                f"redis-benchmark {fmt(tls_cpu('tls-proxy', 'client_ticks'), '.2f')}")
tls_headers = ["test", "redis TLS port rps", "proxy TLS→TLS rps", "proxy/direct (median of paired rounds)", "per round", "target ≥ 0.85"]
def tls_cells(row):
    met = DASH if row["ratio"] is None else ("met" if row["ratio"] >= TLS_TARGET else "not met")
    return [row["test"], fmt(row["direct"], ",.0f"), fmt(row["proxy"], ",.0f"), fmt(row["ratio"], ".2f"),
            ", ".join(f"{x:.2f}" for x in row["all"]) or DASH, met]
tls_note = (f"TLS on both sides at pipeline 1: redis-benchmark --tls ({clients} clients) against "
            "redis-server's own TLS port, and through the proxy's TLS listener, the proxy speaking TLS "
            "to that same port (audit trail on, default settings), alternating per round.")

acl_headers = ["pipeline", "test", "proxy rps", "proxy-acl rps", "proxy-acl/proxy (median of paired rounds)", "per round"]
def acl_cells(row):
    return [f"-P {row['pipeline']}", row["test"], fmt(row["proxy"], ",.0f"), fmt(row["acl"], ",.0f"),
            fmt(row["ratio"], ".2f"), ", ".join(f"{x:.2f}" for x in row["all"]) or DASH]
acl_note = ("proxy-acl: the auditing proxy with `auth.users_file` (a 20-rule default user: key and "
            "channel patterns, %R~/%W~, categories, a first-arg rule, two selectors) and "
            "`acl.mode = \"enforce\"`, every SET and GET checked and allowed (the run fails if any "
            "is denied).")

meta = {k[len("BENCH_META_"):].lower(): v for k, v in os.environ.items() if k.startswith("BENCH_META_")}
setup = (f"{clients} clients, {requests} requests per test, {rounds} rounds alternating "
         f"{'/'.join(targets)}; medians over the rounds; latencies in ms")
arms_note = ("proxy: this proxy with its audit trail on (every command recorded to the run's "
             "temporary directory, default settings: async writer, drop on a full queue); "
             "proxy-noaudit: a second instance, same binary and defaults, started with a config "
             "file holding only `[audit] enabled = false`; both in front of the same redis-server. "
             "Audit overhead = proxy rps / proxy-noaudit rps "
             f"(target ≥ {AUDIT_TARGET:.2f} at pipeline 1 and 16).")
cpu_setup = ("CPU time (utime + stime from /proc/<pid>/stat, all threads) of each process over one "
             "redis-benchmark run (SET then GET), divided by the requests of that run; for the "
             "auditing proxy the reading after the run waits until its audit writer has caught up; "
             "median over the rounds; "
             f"resolution {cpu_resolution:.3f} µs (1/{cpu_table[0]['clk_tck']} s per "
             f"{cpu_table[0]['requests']} requests)")
if twem:
    twem_note = (f"twemproxy: {meta['twemproxy']}, configured as in the commands below; it multiplexes "
                 f"all {clients} clients over one connection to Redis (server_connections defaults "
                 f"to 1), where the proxy opens one upstream connection per client.")
else:
    twem_note = f"twemproxy: {meta['twemproxy']}."
audit_line = (f"{audit['lines']:,} lines, {audit['bytes']:,} bytes in {audit['files']} file(s), "
              f"{fmt(audit_per_line, ',.1f')} bytes per record; {audit['command_records']:,} command "
              f"records ({fmt(audit_per_command, ',.1f')} bytes of trail per command record) for "
              f"{audit_sent:,} SET/GET sent through the proxy (plus redis-benchmark's own CONFIG "
              f"GETs); {audit['lost_records']:,} command records dropped (queue full); writer caught "
              f"up within {max(audit_lags) / 1000:.1f} s of each run's end (at most)")

def render(headers, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return lines

# Plain report.
print()
print("=" * 100)
print(f"redis-audit-proxy benchmark — {meta['date']}, commit {meta['rev']}")
print(f"{meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, redis {meta['redis']}, {meta['rustc']}")
print(setup)
print(arms_note)
print(twem_note)
print()
print("throughput:")
print("\n".join(render(rps_headers, [rps_cells(r) for r in table])))
print()
print(f"audit overhead target (proxy ≥ {AUDIT_TARGET:.2f} × proxy-noaudit): " + "; ".join(audit_verdicts))
print()
print("latency (ms):")
print("\n".join(render(lat_headers, [lat_cells(r) for r in table])))
print()
print("TLS on both sides (pipeline 1):")
print("\n".join(render(tls_headers, [tls_cells(r) for r in tls_rows])))
print(tls_note)
print(tls_cpu_line)
print()
if acl_rows:
    print("ACL enforce cost:")
    print("\n".join(render(acl_headers, [acl_cells(r) for r in acl_rows])))
    print(acl_note)
    print()
print("rps per round (" + " | ".join(ARMS) + " | audit overhead):")
for row in table:
    per_target = [", ".join(f"{x:,.0f}" for x in row[f"rps_all_{arm}"]) or DASH for arm in ARMS]
    per_target.append(", ".join(f"{x:.2f}" for x in row["audit_overhead_all"]) or DASH)
    print(f"  -P {row['pipeline']:<3} {row['test']}: " + " | ".join(per_target))
print()
print("CPU µs per request:")
print("\n".join(render(cpu_headers, [cpu_cells(r) for r in cpu_table])))
print(f"({cpu_setup})")
print()
print(f"audit trail written by the proxy arm over the throughput rounds: {audit_line}")
print(f"idle connections: {idle['connections']} clients; proxy VmRSS "
      f"{idle['rss_before_kib']} KiB -> {idle['rss_connected_kib']} KiB connected "
      f"({idle['kib_per_conn_connected']:.1f} KiB/connection) -> {idle['rss_after_ping_kib']} KiB "
      f"after one PING each ({idle['kib_per_conn_after_ping']:.1f} KiB/connection)")
print(f"{big['mib']} MiB value: proxy VmHWM {big['hwm_before_kib']} KiB -> "
      f"{big['hwm_after_set_kib']} KiB after SET (+{big_set_mib:.1f} MiB) -> "
      f"{big['hwm_after_get_kib']} KiB after GET; peak increase {big_peak_mib:.1f} MiB = "
      f"{big_multiple:.2f} x {big['mib']} MiB; VmRSS afterwards {big['rss_after_kib']} KiB; "
      f"SET {big['set_seconds']:.2f} s, GET {big['get_seconds']:.2f} s")
print()
print("commands:")
for line in commands:
    print(f"  {line}")

# Markdown.
def md_table(headers, rows, text_columns=1):
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] * text_columns + ["---:"] * (len(headers) - text_columns)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines

md = []
md.append(f"### Run of {meta['date']} (commit {meta['rev']})")
md.append("")
md.append(f"{meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, Redis {meta['redis']}, "
          f"{meta['rustc']}; redis-benchmark, redis-server and the proxies share the machine. "
          f"{setup}. {arms_note} {twem_note}")
md.append("")
md.extend(md_table(rps_headers, [rps_cells(r) for r in table], text_columns=2))
md.append("")
md.append(f"Audit overhead target (proxy ≥ {AUDIT_TARGET:.2f} × proxy-noaudit): "
          + "; ".join(audit_verdicts) + ".")
md.append("")
md.append("Latency (ms):")
md.append("")
md.extend(md_table(lat_headers, [lat_cells(r) for r in table], text_columns=2))
md.append("")
md.append(f"TLS on both sides ({tls_note}):")
md.append("")
md.extend(md_table(tls_headers, [tls_cells(r) for r in tls_rows], text_columns=1))
md.append("")
md.append(tls_cpu_line + ".")
md.append("")
if acl_rows:
    md.append(f"ACL enforce cost ({acl_note}):")
    md.append("")
    md.extend(md_table(acl_headers, [acl_cells(r) for r in acl_rows], text_columns=2))
    md.append("")
md.append(f"CPU µs per request ({cpu_setup}):")
md.append("")
md.extend(md_table(cpu_headers, [cpu_cells(r) for r in cpu_table]))
md.append("")
md.append(f"- Audit trail written by the `proxy` arm over the throughput rounds: {audit_line}.")
md.append(f"- Idle connections: {idle['connections']} clients cost the proxy "
          f"{idle['kib_per_conn_connected']:.1f} KiB each once connected "
          f"(VmRSS {idle['rss_before_kib']} → {idle['rss_connected_kib']} KiB) and "
          f"{idle['kib_per_conn_after_ping']:.1f} KiB each after one PING "
          f"(→ {idle['rss_after_ping_kib']} KiB); each includes its upstream connection.")
md.append(f"- {big['mib']} MiB value (`SET big`, then `GET big`, through the proxy): peak RSS "
          f"(VmHWM) rose by {big_set_mib:.1f} MiB during the SET and {big_peak_mib:.1f} MiB in all, "
          f"{big_multiple:.2f} × the value size.")
md.append("")
md.append("Commands:")
md.append("")
md.append("```sh")
md.extend(commands)
md.append("```")
markdown = "\n".join(md) + "\n"
with open(os.path.join(out, "report.md"), "w") as f:
    f.write(markdown)

print()
print("----- 8< ----- markdown for docs/benchmarks.md (also in target/bench/report.md) -----")
print(markdown, end="")
print("----- >8 -----------------------------------------------------------------------------")
PY
