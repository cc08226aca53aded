#!/usr/bin/env bash
# Benchmark: how long `ferry status --json` takes to read and summarise a fleet's host reports
# (list + one GET per host, 16 in flight) against the same local S3-compatible server (moto on
# 127.0.0.1) as the shell baseline that only downloads them: `aws s3 sync` of the hosts prefix.
# Prints both times and the ratio ferry/aws (goal: <= 1.0; the status also parses, checks the
# pointer and groups by version and wave).
#
# The reports are written in the agent's format by python (boto3, installed with moto): one
# per host, versions and states mixed. Needs: cargo, moto_server, aws, python3 with boto3.
# Usage: bench/rollout-status.sh [HOSTS]   (default 1000; RUNS=3 in the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

hosts="${1:-1000}"
runs="${RUNS:-3}"

cargo build --release -q -p ferry
ferry="$(pwd)/target/release/ferry"

work="$(mktemp -d)"
moto_pid=""
cleanup() {
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

start_moto "$work/moto.log"
store="s3://ferry-bench/fleet"

# A channel to summarise against: a tiny package published with three waves.
mkdir -p "$work/root/DEBIAN"
printf 'Package: hello\nVersion: 2.0.0-1\nArchitecture: amd64\nMaintainer: Bench <bench@example.invalid>\nDescription: bench\n' \
  >"$work/root/DEBIAN/control"
dpkg-deb --root-owner-group --build "$work/root" "$work/hello.deb" >/dev/null
"$ferry" keygen "$work/bench" >/dev/null
"$ferry" -q publish --store "$store" --s3-endpoint "$endpoint" --app hello \
  --key "$work/bench.key" --waves 5%:0,25%:10m,100%:1h "$work/hello.deb" >/dev/null

python3 - "$endpoint" "$hosts" <<'PY'
import json, sys, boto3
from concurrent.futures import ThreadPoolExecutor
endpoint, hosts = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=endpoint)
def put(index):
    version, state, bad = ("2.0.0-1", "ok", []) if index % 3 else ("1.0.0-1", "ok", [])
    if index % 50 == 7:
        state, bad = "rolled-back", [{"version": "2.0.0-1", "sha256": "00", "serial": 1, "reason": "health", "at": "2026-11-27T08:00:00Z"}]
    report = {"schema": 1, "app": "hello", "channel": "stable", "host-id": f"host-{index:05}",
              "version": version, "serial": 1, "highest-serial": 1, "state": state, "step": "idle",
              "last-error": None, "bad": bad, "updated-at": "2026-11-27T08:00:00Z",
              "last-change-at": "2026-11-27T08:00:00Z", "agent-version": "0.1.0"}
    s3.put_object(Bucket="ferry-bench", Key=f"fleet/apps/hello/hosts/host-{index:05}.json",
                  Body=json.dumps(report, indent=2).encode())
with ThreadPoolExecutor(16) as pool:
    list(pool.map(put, range(hosts)))
PY

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
best_aws=""; best_ferry=""
for run in $(seq 1 "$runs"); do
  rm -rf "$work/sync"
  start="$(now)"
  aws --endpoint-url "$endpoint" s3 sync --only-show-errors "$store/apps/hello/hosts/" "$work/sync/"
  aws_time="$(calc "$(now) - $start")"

  start="$(now)"
  "$ferry" -q status --store "$store" --s3-endpoint "$endpoint" --app hello --json >"$work/status.json"
  ferry_time="$(calc "$(now) - $start")"

  printf 'run %d: aws s3 sync %.3f s, ferry status %.3f s\n' "$run" "$aws_time" "$ferry_time"
  if [ -z "$best_aws" ] || [ "$(calc "int($aws_time < $best_aws)")" = 1 ]; then best_aws="$aws_time"; fi
  if [ -z "$best_ferry" ] || [ "$(calc "int($ferry_time < $best_ferry)")" = 1 ]; then best_ferry="$ferry_time"; fi
done

python3 - "$work/status.json" "$hosts" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
assert status["totals"]["hosts"] == int(sys.argv[2]), status["totals"]
print("status totals:", status["totals"])
PY
printf 'hosts: %d reports\n' "$hosts"
printf 'best aws s3 sync:  %.3f s (download only)\n' "$best_aws"
printf 'best ferry status: %.3f s (list + read + summarise)\n' "$best_ferry"
printf 'ratio ferry/aws:   %.2fx (goal <= 1.00x)\n' "$(calc "$best_ferry / $best_aws")"
