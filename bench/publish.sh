#!/usr/bin/env bash
# Benchmark: `ferry publish` of a ~100 MB .deb vs `aws s3 cp` of the same file, both to the
# same local S3-compatible server (moto on 127.0.0.1). Prints both times and the ratio
# ferry/aws (goal: <= 1.0). Each side runs RUNS times into a fresh prefix; the best run counts.
#
# Needs: cargo, dpkg-deb, moto_server and aws (scripts/test installs them).
# Usage: bench/publish.sh [SIZE_MB]   (default 100; RUNS=3 in the environment to change runs)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

size_mb="${1:-100}"
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

# A package whose payload is incompressible, stored uncompressed: the .deb is ~SIZE_MB.
mkdir -p "$work/root/DEBIAN" "$work/root/usr/share/bench"
printf 'Package: bench\nVersion: 1.0\nArchitecture: amd64\nMaintainer: Bench <bench@example.invalid>\nDescription: benchmark payload\n' \
  >"$work/root/DEBIAN/control"
head -c "$((size_mb * 1024 * 1024))" /dev/urandom >"$work/root/usr/share/bench/payload"
dpkg-deb --root-owner-group -Znone --build "$work/root" "$work/bench.deb" >/dev/null
"$ferry" keygen "$work/bench" >/dev/null
bytes="$(stat -c %s "$work/bench.deb")"

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
best_aws=""; best_ferry=""
for run in $(seq 1 "$runs"); do
  start="$(now)"
  aws --endpoint-url "$endpoint" s3 cp --only-show-errors "$work/bench.deb" "s3://ferry-bench/aws-$run/bench.deb"
  aws_time="$(calc "$(now) - $start")"

  start="$(now)"
  "$ferry" -q publish --store "s3://ferry-bench/ferry-$run" --s3-endpoint "$endpoint" \
    --app bench --channel stable --key "$work/bench.key" "$work/bench.deb" >/dev/null
  ferry_time="$(calc "$(now) - $start")"

  printf 'run %d: aws s3 cp %.3f s, ferry publish %.3f s\n' "$run" "$aws_time" "$ferry_time"
  if [ -z "$best_aws" ] || [ "$(calc "int($aws_time < $best_aws)")" = 1 ]; then best_aws="$aws_time"; fi
  if [ -z "$best_ferry" ] || [ "$(calc "int($ferry_time < $best_ferry)")" = 1 ]; then best_ferry="$ferry_time"; fi
done

printf 'artifact: %d bytes\n' "$bytes"
printf 'best aws s3 cp:     %.3f s\n' "$best_aws"
printf 'best ferry publish: %.3f s (hash + sign + upload + release + pointer)\n' "$best_ferry"
printf 'ratio ferry/aws:    %.2fx (goal <= 1.00x)\n' "$(calc "$best_ferry / $best_aws")"
