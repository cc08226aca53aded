#!/usr/bin/env bash
# Delta updates on this project's own service: how many bytes an agent downloads for a new
# release through a patch, against the whole package, measured in the same run.
#
#   bench/delta.sh
#
# Copies the workspace, builds hello-service in release mode four times — the base, a
# one-line change, a 20-line change, and a dependency bump (httparse 1.10.0 → 1.10.1, which
# hyper's HTTP parser is) — and packs each with `strip = true`. For each change: publish the
# base, then the change (`ferry publish`, which makes the patch; timed and its peak RSS
# taken, against `--deltas 0` on another store), then an agent that has the base takes the
# change through the patch, and a fresh agent takes it whole (each `ferry agent --once`
# timed, with its peak RSS). Needs GNU time (/usr/bin/time, Debian package time).
# The last line is `delta one-line=<pct>% twenty-line=<pct>% bump=<pct>%`: the bytes the
# agent downloaded as a percentage of the full .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ -x /usr/bin/time ] || { echo "bench/delta.sh needs GNU time: apt-get install time" >&2; exit 1; }
echo "building ferry (release) ..." >&2
cargo build --release -p ferry -q
ferry="$repo/target/release/ferry"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-delta.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=1795770000 NO_COLOR=1 AWS_EC2_METADATA_DISABLED=true
unset FERRY_STORE FERRY_APP FERRY_KEY FERRY_TRUST RUST_LOG

# --- four builds of hello-service ----------------------------------------------------
src="$work/src"
mkdir -p "$src"
tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$src"
export CARGO_TARGET_DIR="$work/target"
main="$src/examples/hello-service/src/main.rs"
build() { # NAME: build the tree as it is now and keep its binary
  (cd "$src" && cargo build --release -q -p hello-service)
  cp "$CARGO_TARGET_DIR/release/hello-service" "$work/hello-$1"
}
echo "building hello-service: base (httparse 1.10.0) ..." >&2
(cd "$src" && cargo update -q -p httparse --precise 1.10.0)
cp "$main" "$work/main.rs.base"
build base
echo "building hello-service: one-line change ..." >&2
sed -i 's|"usage: hello-service \[--listen ADDR\]   (see the crate docs for env vars)"|"usage: hello-service [--listen ADDR]   (environment variables: see the crate docs)"|' "$main"
cmp -s "$main" "$work/main.rs.base" && { echo "the one-line edit did not apply" >&2; exit 1; }
build one-line
cp "$work/main.rs.base" "$main"
echo "building hello-service: 20-line change ..." >&2
cat >> "$main" <<'RUST'

/// Added by bench/delta.sh: a 20-line change (a small helper the service now calls).
fn describe_mode(mode: &str) -> &'static str {
    match mode {
        "normal" => "serving normally",
        "crash" => "exits at start",
        "fail-ready" => "never becomes ready",
        "unhealthy" => "answers /health with 500",
        _ => "unknown mode",
    }
}

#[used]
static DESCRIBE_MODE: fn(&str) -> &'static str = describe_mode;

#[test]
fn modes_are_described() {
    assert_eq!(describe_mode("crash"), "exits at start");
    assert_eq!(describe_mode("?"), "unknown mode");
}
RUST
build twenty-line
cp "$work/main.rs.base" "$main"
echo "building hello-service: dependency bump (httparse 1.10.1) ..." >&2
(cd "$src" && cargo update -q -p httparse --precise 1.10.1)
build bump

# --- packages --------------------------------------------------------------------------
pack() { # NAME VERSION
  local dir="$work/pack-$1"
  mkdir -p "$dir"
  cp "$work/hello-$1" "$dir/hello-service"
  cat > "$dir/ferry.toml" <<TOML
[package]
name = "hello"
version = "$2"
maintainer = "ferry bench <bench@example.invalid>"
description = "hello-service for bench/delta.sh"
strip = true

[[files]]
source = "hello-service"
dest = "/usr/bin/hello-service"
mode = "0755"
TOML
  "$ferry" -q pack --config "$dir/ferry.toml" --out "$dir/out" >/dev/null
  ls "$dir"/out/*.deb
}
base_deb=$(pack base 1.0.0)
"$ferry" -q keygen "$work/release" >/dev/null

# time -v's elapsed seconds and peak RSS in MB of one run: prints "SECONDS MB".
measure() {
  local log="$1"; shift
  if ! /usr/bin/time -v "$@" >"$log.out" 2>"$log"; then
    echo "failed: $*" >&2; cat "$log" >&2; return 1
  fi
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
              /Maximum resident set size/ { kb = $2 }
              END { printf "%.3f %.1f\n", s, kb / 1024 }' "$log"
}

agent_file() { # DIR STORE
  mkdir -p "$1"
  cat > "$1/agent.toml" <<TOML
store = "$2"
app = "hello"
channel = "stable"
trust = ["$work/release.pub"]
host-id = "$(basename "$1")"
state-dir = "$1/state"
cache-dir = "$1/cache"

[install]
method = "unpack"
root = "$1/srv"
TOML
}

results=()
printf '%-12s %10s %10s %8s | %-22s %-22s | %-22s %-22s\n' change full-B patch-B ratio \
  "publish+delta s/MB" "publish(no delta) s/MB" "agent patch s/MB" "agent full s/MB"
for change in one-line twenty-line bump; do
  deb=$(pack "$change" 2.0.0)
  store="file://$work/store-$change"
  plain="file://$work/plain-$change"
  for s in "$store" "$plain"; do
    "$ferry" -q publish --create-store --store "$s" --app hello --key "$work/release.key" "$base_deb" >/dev/null
  done
  host="$work/host-$change"; fresh="$work/fresh-$change"
  agent_file "$host" "$store"; agent_file "$fresh" "$store"
  "$ferry" -q agent --once --config "$host/agent.toml" 2>/dev/null
  m=$(measure "$work/publish-$change.log" "$ferry" -q publish --store "$store" --app hello --key "$work/release.key" "$deb"); read -r pub_s pub_mb <<<"$m"
  m=$(measure "$work/plain-$change.log" "$ferry" -q publish --deltas 0 --store "$plain" --app hello --key "$work/release.key" "$deb"); read -r plain_s plain_mb <<<"$m"
  m=$(measure "$work/agent-$change.log" "$ferry" -q agent --once --config "$host/agent.toml"); read -r patch_s patch_mb <<<"$m"
  m=$(measure "$work/fresh-$change.log" "$ferry" -q agent --once --config "$fresh/agent.toml"); read -r whole_s whole_mb <<<"$m"
  status=$("$ferry" agent status --json --config "$host/agent.toml")
  via=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1])["last-download"]; print(d["via"], d["bytes"], d["full-bytes"])' "$status")
  read -r how bytes full <<<"$via"
  [ "$how" = patch ] || { echo "$change: the agent did not take the patch ($via)" >&2; cat "$work/agent-$change.log" >&2; exit 1; }
  cmp -s "$host/srv/current/usr/bin/hello-service" "$fresh/srv/current/usr/bin/hello-service" \
    || { echo "$change: the patched install differs from the full one" >&2; exit 1; }
  pct=$(python3 -c "print(f'{100*$bytes/$full:.2f}')")
  printf '%-12s %10d %10d %7s%% | %8ss %6sMB %8s | %8ss %6sMB %8s | %8ss %6sMB %8s | %8ss %6sMB\n' \
    "$change" "$full" "$bytes" "$pct" "$pub_s" "$pub_mb" "" "$plain_s" "$plain_mb" "" "$patch_s" "$patch_mb" "" "$whole_s" "$whole_mb"
  results+=("$change=$pct%")
done
echo "agent runs include poll, verify, unpack and commit; 'agent full' downloads the whole .deb from the same store"
echo "delta ${results[*]}"
