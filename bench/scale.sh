#!/usr/bin/env bash
# Benchmark: the fleet at scale, on this machine (crates/ferry/tests/scale_bench.rs).
#
# 1. 10,000 pollers in one process, each running the agent's own poll code
#    (ferry_agent::poll::poll_pointer) every 10 s, through nginx as a caching proxy (a CDN
#    stand-in) in front of the S3 test server (moto); pointers are published with a 5 s
#    max-age. Prints the requests per second reaching the origin while idle (bound:
#    2 x edges / TTL), publish → seen per poller (p50, p99, max; bound interval + TTL + 2 s),
#    and the pollers' CPU and memory.
# 2. `ferry status --json` over 10,000 hosts' reports as one object per host (the baseline,
#    measured in the same run) and in 1024 report shards, then over 100,000 hosts in shards.
#
# The last line is `scale pollers=<n> origin_rps=<x> bound_rps=<x> p99_seen_s=<x>
# bound_seen_s=<x> status_100k_s=<x>`.
#
# Needs: cargo, nginx (Debian package); moto comes from the tools virtualenv
# (scripts/python-tools). About 4 minutes after the build.
# Usage: bench/scale.sh
#   POLLERS=2000 INTERVAL=10 TTL=5 IDLE=30 STATUS_HOSTS=100000 BASELINE_HOSTS=10000 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# 10,000 pollers keep many sockets open through their connection pool.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ -x /usr/sbin/nginx ] || { echo "bench/scale.sh needs nginx: apt-get install nginx (scripts/test installs it)" >&2; exit 1; }
# shellcheck source=scripts/python-tools
. scripts/python-tools

export FERRY_BENCH_POLLERS="${POLLERS:-10000}"
export FERRY_BENCH_INTERVAL_S="${INTERVAL:-10}"
export FERRY_BENCH_TTL_S="${TTL:-5}"
export FERRY_BENCH_IDLE_S="${IDLE:-30}"
export FERRY_BENCH_STATUS_HOSTS="${STATUS_HOSTS:-100000}"
export FERRY_BENCH_BASELINE_HOSTS="${BASELINE_HOSTS:-10000}"
exec cargo test --release -q -p ferry --test scale_bench -- --ignored --nocapture --test-threads 1
