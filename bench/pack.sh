#!/usr/bin/env bash
# Benchmark `ferry pack` against Debian's `dpkg-deb --build` (the same tree, the same
# compressor and level) and against `cargo deb` with its defaults, on a ≥40 MB ELF binary.
#
#   bench/pack.sh            # one command; RUNS=5 (median), CARGO_DEB_RUNS=1
#
# Builds ferry in release mode, installs cargo-deb with `cargo install` when it is missing,
# and makes the test binary itself: a small C program (gcc) with 48 MiB of real machine
# code (this system's shared libraries and executables, in sorted order) added as a
# section with objcopy, so it compresses like a real large binary (as a non-allocated section, like debug info).
# Prints each median time, the ratios, and the goals: ferry ≤ 1.1× dpkg-deb -Zzstd,
# ≥ 50× faster than cargo deb.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
CARGO_DEB_RUNS=${CARGO_DEB_RUNS:-1}
BLOB_MIB=${BLOB_MIB:-48}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1795770000}

for tool in gcc objcopy dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "bench/pack.sh needs $tool (apt-get install gcc binutils dpkg-dev)" >&2; exit 1; }
done
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb (cargo install cargo-deb) ..." >&2
  cargo install cargo-deb --locked >&2
fi

echo "building ferry (release) ..." >&2
cargo build --release -p ferry -q
ferry="$PWD/target/release/ferry"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the ≥40 MB binary ---------------------------------------------------------------
printf 'int main(void) { return 0; }\n' > "$work/main.c"
gcc -O2 -o "$work/small" "$work/main.c"
{ find /usr/lib /usr/bin -type f \( -name '*.so*' -o -perm -u+x \) -size +8k 2>/dev/null \
    | LC_ALL=C sort | xargs cat 2>/dev/null || true; } | head -c $((BLOB_MIB << 20)) > "$work/blob"
# A non-allocated section, like the debug info that makes real release binaries this big.
objcopy --add-section .ferry_bench_blob="$work/blob" \
  --set-section-flags .ferry_bench_blob=readonly,contents "$work/small" "$work/benchsvc"
binary_size=$(stat -c %s "$work/benchsvc")
if [ "$binary_size" -lt $((40 << 20)) ]; then
  echo "could only make a $binary_size byte binary (need ≥ 40 MiB)" >&2; exit 1
fi

cat > "$work/ferry.toml" <<TOML
[package]
name = "benchsvc"
version = "1.0.0-1"
maintainer = "Bench <bench@example.com>"
description = """Benchmark service
A large binary to measure packing speed."""
section = "net"

[[files]]
source = "benchsvc"
dest = "/usr/bin/benchsvc"
mode = "0755"
TOML

# --- timing ------------------------------------------------------------------------------
# median wall time in milliseconds of RUNS runs of "$@"
median_ms() {
  local runs=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }
size_of() { stat -c %s "$1"; }

ferry_pack() { # compression level outdir
  "$ferry" -q pack --config "$work/ferry.toml" --out "$3" --compression "$1" --level "$2"
}

# The same tree for dpkg-deb: ferry's own package unpacked (files, DEBIAN/ with md5sums…).
ferry_pack zstd 3 "$work/ferry-ref" >/dev/null
dpkg-deb -R "$work/ferry-ref/benchsvc_1.0.0-1_amd64.deb" "$work/tree"

echo
echo "binary: $(( binary_size >> 20 )) MiB ELF ($(nproc) CPUs, median of $RUNS runs)"
printf '%-42s %10s %12s\n' "packer" "time (ms)" "size (bytes)"
declare -A time size
for case in "zstd 3" "xz 6" "gzip 9"; do
  set -- $case
  compression=$1 level=$2
  flag=$compression
  time[ferry-$compression]=$(median_ms "$RUNS" ferry_pack "$compression" "$level" "$work/out-ferry-$compression")
  size[ferry-$compression]=$(size_of "$work/out-ferry-$compression/benchsvc_1.0.0-1_amd64.deb")
  time[dpkg-$compression]=$(median_ms "$RUNS" dpkg-deb --root-owner-group -Z"$flag" -z"$level" --build "$work/tree" "$work/dpkg-$compression.deb")
  size[dpkg-$compression]=$(size_of "$work/dpkg-$compression.deb")
  printf '%-42s %10s %12s\n' "ferry pack --compression $compression --level $level" "${time[ferry-$compression]}" "${size[ferry-$compression]}"
  printf '%-42s %10s %12s\n' "dpkg-deb -Z$flag -z$level --build" "${time[dpkg-$compression]}" "${size[dpkg-$compression]}"
done
time[ferry-default]=$(median_ms "$RUNS" "$ferry" -q pack --config "$work/ferry.toml" --out "$work/out-ferry-default")
size[ferry-default]=$(size_of "$work/out-ferry-default/benchsvc_1.0.0-1_amd64.deb")
printf '%-42s %10s %12s\n' "ferry pack (defaults: zstd 3)" "${time[ferry-default]}" "${size[ferry-default]}"

# cargo deb with its defaults, packing (not building) a crate whose binary is the same ELF.
mkdir -p "$work/crate/src" "$work/crate/target/release"
cat > "$work/crate/Cargo.toml" <<TOML
[package]
name = "benchsvc"
version = "1.0.0"
edition = "2021"
description = "Benchmark service"
license = "MIT"
authors = ["Bench <bench@example.com>"]

[package.metadata.deb]
maintainer = "Bench <bench@example.com>"

[workspace]
TOML
printf 'fn main() {}\n' > "$work/crate/src/main.rs"
cp "$work/benchsvc" "$work/crate/target/release/benchsvc"
cargo_deb() { (cd "$work/crate" && cargo deb --no-build --offline -o "$work/cargo-deb.deb"); }
if cargo_deb >"$work/cargo-deb.log" 2>&1; then
  time[cargo-deb]=$(median_ms "$CARGO_DEB_RUNS" cargo_deb)
  size[cargo-deb]=$(size_of "$work/cargo-deb.deb")
  printf '%-42s %10s %12s\n' "cargo deb --no-build (defaults)" "${time[cargo-deb]}" "${size[cargo-deb]}"
else
  echo "cargo deb failed:" >&2; cat "$work/cargo-deb.log" >&2
  time[cargo-deb]=0
fi

echo
echo "ratios (lower is better for ferry / baseline):"
for compression in zstd xz gzip; do
  echo "  ferry $compression / dpkg-deb $compression: $(ratio "${time[ferry-$compression]}" "${time[dpkg-$compression]}")×"
done
echo "  ferry default / dpkg-deb -Zzstd: $(ratio "${time[ferry-default]}" "${time[dpkg-zstd]}")×   (goal ≤ 1.10)"
if [ "${time[cargo-deb]}" != 0 ]; then
  echo "  cargo deb / ferry default: $(ratio "${time[cargo-deb]}" "${time[ferry-default]}")× faster   (goal ≥ 50)"
fi
