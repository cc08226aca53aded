#!/usr/bin/env bash
# Benchmark zero-downtime restarts: the same load (hello-load: 32 blocking clients, 24
# keep-alive + 8 new-connection, like the test suite) against
#   1. the baseline: hello-service alone, restarted the plain way (SIGTERM, wait, start again);
#   2. `ferry run`, reloaded with SIGHUP (ExecReload=kill -HUP $MAINPID);
# each with a restart every RELOAD_INTERVAL seconds for PHASE_SECONDS seconds, plus a steady phase
# with no restarts. Prints every request class (ok / refused / reset / timeout / wrong) and
# p50/p99 latency during reloads vs steady state (goal: p99 during reloads <= 2x steady).
# Then an external load generator, wrk (Debian package, installed when missing), runs against
# `ferry run` during reloads; it must report zero socket errors.
#
#   bench/reload.sh                  # PHASE_SECONDS=10 RELOAD_INTERVAL=0.25 WRK_CONNECTIONS=32
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_PHASE=${PHASE_SECONDS:-10}
RELOAD_INTERVAL=${RELOAD_INTERVAL:-0.25}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}

if ! command -v wrk >/dev/null; then
  echo "installing wrk from Debian ..." >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
command -v python3 >/dev/null || { echo "bench/reload.sh needs python3 (for a free port)" >&2; exit 1; }

echo "building ferry, hello-service and hello-load (release) ..." >&2
cargo build --release -q -p ferry -p hello-service --bins
ferry="$PWD/target/release/ferry"
hello="$PWD/target/release/hello-service"
load="$PWD/target/release/hello-load"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-reload.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # wait until something accepts on $1 (bounded: 10 s)
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
# restarts <seconds> <command...>: run the command every RELOAD_INTERVAL seconds for <seconds>.
restarts() {
  local end=$(( $(date +%s%N) + ${1%.*} * 1000000000 )); shift
  local count=0
  while [ "$(date +%s%N)" -lt "$end" ]; do "$@"; count=$((count + 1)); sleep "$RELOAD_INTERVAL"; done
  echo "$count" > "$work/restart-count"
}

# --- 1. baseline: plain stop/start ---------------------------------------------------------
port=$(free_port)
start_plain() { HELLO_VERSION=plain "$hello" --listen "127.0.0.1:$port" 2>>"$work/plain.log" & plain_pid=$!; pids+=("$plain_pid"); }
restart_plain() { kill -TERM "$plain_pid"; wait "$plain_pid" 2>/dev/null || true; start_plain; wait_port "$port"; }
start_plain; wait_port "$port"
echo "baseline (stop/start): steady ${SECONDS_PER_PHASE}s ..." >&2
plain_steady=$("$load" "127.0.0.1:$port" "$SECONDS_PER_PHASE")
echo "baseline (stop/start): restarts every ${RELOAD_INTERVAL}s ..." >&2
"$load" "127.0.0.1:$port" "$SECONDS_PER_PHASE" > "$work/plain-reloads.json" & load_pid=$!
restarts "$SECONDS_PER_PHASE" restart_plain
wait "$load_pid"; plain_reloads=$(cat "$work/plain-reloads.json"); plain_count=$(cat "$work/restart-count")
kill -TERM "$plain_pid"; wait "$plain_pid" 2>/dev/null || true

# --- 2. ferry run ------------------------------------------------------------------------
port=$(free_port)
HELLO_VERSION=ferry RUST_LOG=info "$ferry" run --listen "http=127.0.0.1:$port" --drain-timeout 10 -- "$hello" 2>>"$work/ferry.log" & ferry_pid=$!
pids+=("$ferry_pid")
wait_port "$port"
reload_ferry() { kill -HUP "$ferry_pid"; }
echo "ferry run: steady ${SECONDS_PER_PHASE}s ..." >&2
ferry_steady=$("$load" "127.0.0.1:$port" "$SECONDS_PER_PHASE")
echo "ferry run: SIGHUP reload every ${RELOAD_INTERVAL}s ..." >&2
"$load" "127.0.0.1:$port" "$SECONDS_PER_PHASE" > "$work/ferry-reloads.json" & load_pid=$!
restarts "$SECONDS_PER_PHASE" reload_ferry
wait "$load_pid"; ferry_reloads=$(cat "$work/ferry-reloads.json"); ferry_count=$(cat "$work/restart-count")
echo "wrk: ${WRK_CONNECTIONS} connections against ferry run, steady ..." >&2
wrk -t2 -c"$WRK_CONNECTIONS" -d"${SECONDS_PER_PHASE}s" --latency "http://127.0.0.1:$port/" > "$work/wrk-steady.txt"
echo "wrk: ${WRK_CONNECTIONS} connections against ferry run, SIGHUP every ${RELOAD_INTERVAL}s ..." >&2
wrk -t2 -c"$WRK_CONNECTIONS" -d"${SECONDS_PER_PHASE}s" --latency "http://127.0.0.1:$port/" > "$work/wrk.txt" & wrk_pid=$!
restarts "$SECONDS_PER_PHASE" reload_ferry
wait "$wrk_pid"; wrk_count=$(cat "$work/restart-count")
# Every SIGHUP became a new process (the log has one "reload succeeded" per swap); a SIGHUP
# that arrives while a reload runs is queued, so wait for the queue to empty.
for _ in $(seq 100); do
  swaps=$(grep -c "reload succeeded" "$work/ferry.log" || true)
  [ "$swaps" -ge $((ferry_count + wrk_count)) ] && break
  sleep 0.1
done

# --- report ------------------------------------------------------------------------------
row() { # name json restarts
  printf '%-30s %9s %9s %8s %7s %8s %6s %9s %9s %8s\n' "$1" "$(field "$2" requests)" "$(field "$2" ok)" \
    "$(field "$2" refused)" "$(field "$2" reset)" "$(field "$2" timeout)" "$(field "$2" wrong)" \
    "$(field "$2" p50_us)" "$(field "$2" p99_us)" "$3"
}
echo
echo "hello-load, 32 clients (24 keep-alive, 8 new connection per request), ${SECONDS_PER_PHASE}s per phase"
printf '%-30s %9s %9s %8s %7s %8s %6s %9s %9s %8s\n' phase requests ok refused reset timeout wrong p50_us p99_us restarts
row "stop/start, steady" "$plain_steady" 0
row "stop/start, restarting" "$plain_reloads" "$plain_count"
row "ferry run, steady" "$ferry_steady" 0
row "ferry run, reloading" "$ferry_reloads" "$ferry_count"
python3 - "$plain_steady" "$plain_reloads" "$ferry_steady" "$ferry_reloads" <<'PY'
import json, sys
plain_steady, plain_reloads, ferry_steady, ferry_reloads = (json.loads(a) for a in sys.argv[1:])
errors = lambda r: r["requests"] - r["ok"]
print(f"errors during restarts: stop/start {errors(plain_reloads)}, ferry run {errors(ferry_reloads)}")
ratio = ferry_reloads["p99_us"] / max(ferry_steady["p99_us"], 1)
print(f"ferry run p99 during reloads / steady p99: {ratio:.2f}x (goal <= 2x: {'met' if ratio <= 2 else 'NOT met'})")
print(f"ferry run p50 during reloads / steady p50: {ferry_reloads['p50_us'] / max(ferry_steady['p50_us'], 1):.2f}x")
PY
echo "ferry run swaps completed (log lines 'reload succeeded'): $swaps of $((ferry_count + wrk_count)) SIGHUPs"
echo
echo "wrk against ferry run, steady:"
cat "$work/wrk-steady.txt"
echo
echo "wrk against ferry run during $wrk_count reloads:"
cat "$work/wrk.txt"
p99() { awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 } print v }' "$1"; }
echo "wrk p99: steady $(p99 "$work/wrk-steady.txt") ms, during reloads $(p99 "$work/wrk.txt") ms"
if grep -q "Socket errors" "$work/wrk.txt"; then
  echo "wrk reported socket errors" ; exit 1
fi
echo "wrk: zero socket errors"
