#!/usr/bin/env bash
# Benchmark: the idle cost of serving APPS apps (default 10) on one host from one `ferry agent`
# (`[[app]]` tables) against the baseline of one agent process per app, as a host runs today
# without multi-app files. Both follow the same APPS channels in one local S3-compatible
# server (moto on 127.0.0.1, behind bench/agent-keepalive-front.py so connections are reused
# the way AWS S3 reuses them), at `interval = "100ms"`, no jitter.
#
# Each setup first installs every app's release (not counted: unpack, restart `none`), then
# makes POLLS idle polls per app (conditional GETs answered 304); the agents' CPU is read
# from /proc before and after and their resident memory (RSS, and PSS from smaps_rollup,
# which splits the shared binary's pages fairly) at the end. A "poll cycle" is one poll of
# every app. Prints both setups, then the ratios: baseline / one agent.
#
# Needs: cargo, dpkg-deb, moto_server and aws (from the tools virtualenv, scripts/python-tools).
# Usage: bench/apps.sh        (APPS=10 POLLS=200 in the environment to change; about 1 minute)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

apps="${APPS:-10}"
polls="${POLLS:-200}"

cargo build --release -q -p ferry
ferry="$(pwd)/target/release/ferry"

work="$(mktemp -d)"
moto_pid=""
front_pid=""
agent_pids=()
cleanup() {
  for pid in "${agent_pids[@]}" "$front_pid" "$moto_pid"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

start_moto "$work/moto.log"
start_keepalive_front "$work/front.log"
front="http://127.0.0.1:$front_port"

# One small package, published to every app.
payload_deb "$work" 65536
"$ferry" keygen "$work/bench" >/dev/null
for index in $(seq 1 "$apps"); do
  "$ferry" -q publish --store "s3://ferry-bench/fleet" --s3-endpoint "$endpoint" \
    --app "app$index" --channel stable --key "$work/bench.key" "$work/bench.deb" >/dev/null
done

# app_keys INDEX SETUP: one app's keys (for a [[app]] table or a single-app file).
app_keys() {
  cat <<TOML
app = "app$1"
channel = "stable"
[install]
method = "unpack"
root = "$work/srv-$2/app$1"
[restart]
method = "none"
TOML
}
top_keys() {
  cat <<TOML
store = "s3://ferry-bench/fleet"
s3-endpoint = "$front"
trust = ["$work/bench.pub"]
interval = "100ms"
jitter = "0s"
state-dir = "$work/state-$1"
host-id = "bench-host"
report = false
TOML
}

# Sum of a metric over every endpoint in $metrics_ports (empty while one is not up yet).
metric_sum() {
  local total=0 port value
  for port in $metrics_ports; do
    value="$({ curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null || true; } | awk -v name="$1" 'index($0, name "{") == 1 { sum += $2 } END { if (NR) print sum + 0 }')"
    [ -n "$value" ] || { echo ""; return; }
    total=$((total + value))
  done
  echo "$total"
}
wait_for() {
  local name="$1" target="$2" deadline=$((SECONDS + 600)) seen
  while [ "$SECONDS" -lt "$deadline" ]; do
    seen="$(metric_sum "$name")"
    if [ -n "$seen" ] && [ "$seen" -ge "$target" ]; then return 0; fi
    sleep 0.2
  done
  echo "the agents did not reach $target for $name (logs in $work)" >&2
  tail -n 20 "$work"/agent-*.log >&2
  exit 1
}
cpu_ticks() { local total=0 pid; for pid in "${agent_pids[@]}"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done; echo "$total"; }
memory_kb() { local total=0 pid; for pid in "${agent_pids[@]}"; do total=$((total + $(awk -v key="$1:" '$1 == key { print $2 }' "/proc/$pid/${2:-status}"))); done; echo "$total"; }

# measure SETUP: start the agents of SETUP (one, or per-app), install, then POLLS idle polls
# per app; sets <SETUP>_* variables.
measure() {
  local setup="$1"
  agent_pids=()
  metrics_ports=""
  if [ "$setup" = one ]; then
    {
      top_keys one
      for index in $(seq 1 "$apps"); do
        echo "[[app]]"
        app_keys "$index" one | sed 's/^\[install\]$/[app.install]/; s/^\[restart\]$/[app.restart]/'
      done
    } >"$work/agent-one.toml"
    local port; port="$(free_port)"
    "$ferry" -q agent --config "$work/agent-one.toml" --metrics "127.0.0.1:$port" 2>"$work/agent-one.log" &
    agent_pids+=($!)
    metrics_ports="$port"
  else
    for index in $(seq 1 "$apps"); do
      { top_keys "each-$index"; app_keys "$index" each; } >"$work/agent-each-$index.toml"
      local port; port="$(free_port)"
      "$ferry" -q agent --config "$work/agent-each-$index.toml" --metrics "127.0.0.1:$port" 2>"$work/agent-each-$index.log" &
      agent_pids+=($!)
      metrics_ports="$metrics_ports $port"
    done
  fi
  wait_for ferry_agent_installs_total "$apps"
  wait_for ferry_agent_polls_total $((apps * 5))
  local polls_start cpu_start cpu_end
  polls_start="$(metric_sum ferry_agent_polls_total)"
  cpu_start="$(cpu_ticks)"
  wait_for ferry_agent_polls_total $((polls_start + apps * polls))
  cpu_end="$(cpu_ticks)"
  printf -v "${setup}_polls" '%s' $(( $(metric_sum ferry_agent_polls_total) - polls_start ))
  printf -v "${setup}_ticks" '%s' $((cpu_end - cpu_start))
  printf -v "${setup}_rss_kb" '%s' "$(memory_kb VmRSS)"
  printf -v "${setup}_pss_kb" '%s' "$(memory_kb Pss smaps_rollup)"
  printf -v "${setup}_processes" '%s' "${#agent_pids[@]}"
  for pid in "${agent_pids[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
  agent_pids=()
}

measure each
measure one

python3 - "$(getconf CLK_TCK)" "$apps" \
  "$each_processes" "$each_polls" "$each_ticks" "$each_rss_kb" "$each_pss_kb" \
  "$one_processes" "$one_polls" "$one_ticks" "$one_rss_kb" "$one_pss_kb" <<'PY'
import sys
hz, apps = int(sys.argv[1]), int(sys.argv[2])
rows = {}
for label, values in [("baseline: one agent per app", sys.argv[3:8]), ("one agent, all apps", sys.argv[8:13])]:
    processes, polls, ticks, rss, pss = (int(v) for v in values)
    cpu = max(ticks, 1) / hz
    cycles = polls / apps
    rows[label] = (cpu / cycles, rss, pss)
    print(f"{label}: {processes} process(es), {polls} idle polls ({cycles:.0f} cycles of {apps} apps), "
          f"CPU {cpu:.2f} s = {cpu / cycles * 1e6:.0f} us per poll cycle, "
          f"RSS {rss / 1024:.1f} MB, PSS {pss / 1024:.1f} MB")
(base_cpu, base_rss, base_pss), (one_cpu, one_rss, one_pss) = rows.values()
print(f"{apps} apps, one agent vs one agent per app: CPU per poll cycle {base_cpu / one_cpu:.1f}x less, "
      f"RSS {base_rss / one_rss:.1f}x less, PSS {base_pss / one_pss:.1f}x less")
PY
