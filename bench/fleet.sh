#!/usr/bin/env bash
# Benchmark: fleet convergence. 1000 `ferry agent` processes on this machine (poll interval
# 10 s, jitter on) follow one channel in a local S3-compatible server (moto on 127.0.0.1).
# Publish, then `ferry rollback`; for each it prints the time from the pointer being written
# to each host running the new version (p50, p99, max), the store's request rate (idle and
# during the rollout, by kind of request), and the agents' total CPU and memory (RSS, PSS).
# Goal: p99 <= interval + 3 s; idle request rate ≈ N / interval.
#
# The agents install with `unpack`, restart method `none`, and health-check by running the
# new release's binary: 1000 supervised services would not fit in memory. The zero-downtime
# swap itself is measured by bench/reload.sh.
#
# Needs: cargo, strip (binutils); moto comes from the tools virtualenv (scripts/python-tools).
# Usage: bench/fleet.sh            (about 3–4 minutes after the build)
#   AGENTS=200 INTERVAL=5 IDLE=20 bench/fleet.sh   for a smaller run
set -euo pipefail
cd "$(dirname "$0")/.."

# 1000 agents + their store connections need file descriptors and processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
# shellcheck source=scripts/python-tools
. scripts/python-tools

cargo build --release -q -p hello-service
export FERRY_BENCH_AGENTS="${AGENTS:-1000}"
export FERRY_BENCH_INTERVAL_S="${INTERVAL:-10}"
export FERRY_BENCH_IDLE_S="${IDLE:-30}"
exec cargo test --release -q -p ferry --test fleet_bench -- --ignored --nocapture --test-threads 1
