#!/usr/bin/env bash
# Benchmark: the CPU and memory an idle `ferry agent` costs per poll, against the shell loop
# ferry replaces (`aws s3api head-object` of the object + `md5sum` of a 10 MB cached .deb,
# every poll). Both poll the same local S3-compatible server (moto on 127.0.0.1).
#
# The agent first installs a release (not counted), then makes POLLS idle polls (a conditional
# GET of the channel pointer; interval 10ms, no jitter); its CPU is read from /proc before and
# after. The shell loop starts a whole Python process per poll, so it is measured over fewer
# polls (BASELINE_POLLS, default 20) and compared per poll.
# The agent is measured twice: against moto directly (moto closes every connection, so each
# poll pays a TCP handshake) and through bench/agent-keepalive-front.py, a keep-alive front
# that reuses the client's connection the way AWS S3 does.
# Prints CPU per poll for all, the ratios (goal: >= 1000x less for the agent) and the agent's
# resident memory (goal: <= 15 MB).
#
# Needs: cargo, dpkg-deb, moto_server and aws (scripts/test installs them).
# Usage: bench/agent-idle.sh   (POLLS=1000 BASELINE_POLLS=20 in the environment to change)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

polls="${POLLS:-1000}"
baseline_polls="${BASELINE_POLLS:-20}"

cargo build --release -q -p ferry
ferry="$(pwd)/target/release/ferry"

work="$(mktemp -d)"
moto_pid=""
agent_pid=""
front_pid=""
cleanup() {
  for pid in "$agent_pid" "$front_pid" "$moto_pid"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

start_moto "$work/moto.log"

# A 10 MB package (incompressible payload, stored uncompressed), published once.
payload_deb "$work" $((10 * 1024 * 1024))
"$ferry" keygen "$work/bench" >/dev/null
"$ferry" -q publish --store "s3://ferry-bench/fleet" --s3-endpoint "$endpoint" \
  --app bench --channel stable --key "$work/bench.key" "$work/bench.deb" >/dev/null

# --- the agent ---------------------------------------------------------------------------
# Empty (not a failure) while the agent's metrics endpoint is not up yet.
metric() { { curl -fs "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null || true; } | awk -v name="$1" 'index($0, name "{") == 1 { print $2 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$agent_pid/stat"; }
wait_for_polls() {
  local target="$1" deadline=$((SECONDS + 600))
  while [ "$SECONDS" -lt "$deadline" ]; do
    local seen; seen="$(metric ferry_agent_polls_total)"
    if [ -n "$seen" ] && [ "$seen" -ge "$target" ]; then return 0; fi
    sleep 0.5
  done
  echo "the agent did not reach $target polls (see $work/agent.log)" >&2
  cat "$work/agent.log" >&2
  exit 1
}

# measure_agent NAME ENDPOINT: install once, then POLLS idle polls; sets <NAME>_* variables.
measure_agent() {
  local name="$1" agent_endpoint="$2"
  metrics_port="$(free_port)"
  cat >"$work/agent-$name.toml" <<TOML
store = "s3://ferry-bench/fleet"
s3-endpoint = "$agent_endpoint"
app = "bench"
channel = "stable"
trust = ["$work/bench.pub"]
interval = "10ms"
jitter = "0s"
state-dir = "$work/state-$name"
host-id = "bench-host"
report = false
[install]
method = "unpack"
root = "$work/srv-$name"
[restart]
method = "none"
TOML
  "$ferry" -q agent --config "$work/agent-$name.toml" --metrics "127.0.0.1:$metrics_port" 2>"$work/agent.log" &
  agent_pid=$!
  wait_for_polls 5
  if [ "$(metric ferry_agent_installs_total)" != 1 ]; then
    echo "the agent did not install the release" >&2; cat "$work/agent.log" >&2; exit 1
  fi
  local polls_start not_modified_start cpu_start
  polls_start="$(metric ferry_agent_polls_total)"
  not_modified_start="$(metric ferry_agent_not_modified_total)"
  cpu_start="$(cpu_ticks)"
  wait_for_polls $((polls_start + polls))
  local cpu_end; cpu_end="$(cpu_ticks)"
  printf -v "${name}_polls" '%s' $(( $(metric ferry_agent_polls_total) - polls_start ))
  printf -v "${name}_not_modified" '%s' $(( $(metric ferry_agent_not_modified_total) - not_modified_start ))
  printf -v "${name}_ticks" '%s' $(( cpu_end - cpu_start ))
  printf -v "${name}_rss_kb" '%s' "$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")"
  printf -v "${name}_peak_kb" '%s' "$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")"
  kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
}

measure_agent direct "$endpoint"

# moto answers every request with `Connection: close`, so each poll above pays a TCP
# handshake (both ends' kernel work lands on the agent over loopback). AWS S3 keeps
# connections alive; a small keep-alive front in front of moto shows that case.
start_keepalive_front "$work/front.log"
measure_agent keepalive "http://127.0.0.1:$front_port"
kill "$front_pid"; wait "$front_pid" 2>/dev/null || true
ticks_per_second="$(getconf CLK_TCK)"

# --- the shell loop it replaces ----------------------------------------------------------
cp "$work/bench.deb" "$work/cached.deb"
baseline="$(python3 - "$baseline_polls" "$endpoint" "$work/cached.deb" <<'PY'
import resource, subprocess, sys
count, endpoint, cached = int(sys.argv[1]), sys.argv[2], sys.argv[3]
loop = (
    f'for i in $(seq 1 {count}); do '
    f'aws --endpoint-url {endpoint} s3api head-object --bucket ferry-bench '
    f'--key fleet/apps/bench/channels/stable.json >/dev/null; '
    f'md5sum {cached} >/dev/null; done'
)
subprocess.run(["bash", "-c", loop], check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
PY
)"
read -r baseline_cpu baseline_rss_kb <<<"$baseline"

python3 - "$ticks_per_second" "$baseline_polls" "$baseline_cpu" "$baseline_rss_kb" \
  "$direct_polls" "$direct_not_modified" "$direct_ticks" "$direct_rss_kb" "$direct_peak_kb" \
  "$keepalive_polls" "$keepalive_not_modified" "$keepalive_ticks" "$keepalive_rss_kb" "$keepalive_peak_kb" <<'PY'
import sys
hz, base_polls, base_cpu, base_rss = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
base_per_poll = base_cpu / base_polls
print(f"shell loop: {base_polls} polls (aws s3api head-object + md5sum of a 10 MB .deb), CPU {base_cpu:.3f} s "
      f"= {base_per_poll * 1e6:.0f} us/poll, peak RSS {base_rss / 1024:.1f} MB (the AWS CLI)")
for label, values in [("agent, moto directly (new connection per poll)", sys.argv[5:10]),
                      ("agent, keep-alive front (connection reused, like AWS S3)", sys.argv[10:15])]:
    polls, not_modified, ticks, rss, peak = (int(v) for v in values)
    cpu = ticks / hz
    # /proc counts CPU in clock ticks (10 ms); over 1000 polls that resolution is enough.
    per_poll = max(cpu, 1 / hz) / polls
    print(f"{label}:")
    print(f"  {polls} idle polls ({not_modified} not-modified), CPU {cpu:.3f} s = {per_poll * 1e6:.1f} us/poll")
    print(f"  CPU per poll, shell loop / agent: {base_per_poll / per_poll:.0f}x less for the agent (goal >= 1000x)")
    print(f"  RSS while idle {rss / 1024:.1f} MB, peak {peak / 1024:.1f} MB (goal <= 15 MB)")
PY
