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
# Runs of the two sides of a comparison are interleaved (A B A B …) so a machine whose load
# changes during the run penalises both alike; each side reports its median.
elapsed_ms() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# median_pair RUNS "command A" "command B" → "msA msB"
median_pair() {
  local runs=$1 first=$2 second=$3 a=() b=()
  for _ in $(seq "$runs"); do
    a+=("$(elapsed_ms $first)")
    b+=("$(elapsed_ms $second)")
  done
  echo "$(median "${a[@]}") $(median "${b[@]}")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }
size_of() { stat -c %s "$1"; }

ferry_default() { "$ferry" -q pack --config "$work/ferry.toml" --out "$work/out-ferry-default"; }
ferry_pack() { # compression level
  "$ferry" -q pack --config "$work/ferry.toml" --out "$work/out-ferry-$1" --compression "$1" --level "$2"
}
dpkg_build() { # compression level
  dpkg-deb --root-owner-group -Z"$1" -z"$2" --build "$work/tree" "$work/dpkg-$1.deb"
}

# The same tree for dpkg-deb: ferry's own package unpacked (files, DEBIAN/ with md5sums…).
ferry_default >/dev/null
dpkg-deb -R "$work/out-ferry-default/benchsvc_1.0.0-1_amd64.deb" "$work/tree"
deb_name=benchsvc_1.0.0-1_amd64.deb

echo
echo "binary: $(( binary_size >> 20 )) MiB ELF ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg), median of $RUNS interleaved runs)"
printf '%-42s %10s %12s\n' "packer" "time (ms)" "size (bytes)"
declare -A time size
read -r time[ferry-zstd] time[dpkg-zstd] < <(median_pair "$RUNS" ferry_default "dpkg_build zstd 3")
size[ferry-zstd]=$(size_of "$work/out-ferry-default/$deb_name")
size[dpkg-zstd]=$(size_of "$work/dpkg-zstd.deb")
printf '%-42s %10s %12s\n' "ferry pack (defaults: zstd 3)" "${time[ferry-zstd]}" "${size[ferry-zstd]}"
printf '%-42s %10s %12s\n' "dpkg-deb -Zzstd -z3 --build" "${time[dpkg-zstd]}" "${size[dpkg-zstd]}"
# Like for like: ferry also hashes every file for md5sums, which dpkg-deb leaves to
# dh_md5sums; this pair charges dpkg-deb for that step too.
dpkg_with_md5sums() {
  (cd "$work/tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums) && dpkg_build zstd 3
}
read -r time[ferry-zstd-2] time[dpkg-md5] < <(median_pair "$RUNS" ferry_default dpkg_with_md5sums)
printf '%-42s %10s\n' "ferry pack (defaults), paired with:" "${time[ferry-zstd-2]}"
printf '%-42s %10s\n' "md5sum + dpkg-deb -Zzstd -z3 --build" "${time[dpkg-md5]}"
for case in "xz 6" "gzip 9"; do
  set -- $case
  read -r time[ferry-$1] time[dpkg-$1] < <(median_pair "$RUNS" "ferry_pack $1 $2" "dpkg_build $1 $2")
  size[ferry-$1]=$(size_of "$work/out-ferry-$1/$deb_name")
  size[dpkg-$1]=$(size_of "$work/dpkg-$1.deb")
  printf '%-42s %10s %12s\n' "ferry pack --compression $1 --level $2" "${time[ferry-$1]}" "${size[ferry-$1]}"
  printf '%-42s %10s %12s\n' "dpkg-deb -Z$1 -z$2 --build" "${time[dpkg-$1]}" "${size[dpkg-$1]}"
done

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
  read -r time[cargo-deb] time[ferry-paired] < <(median_pair "$CARGO_DEB_RUNS" cargo_deb ferry_default)
  size[cargo-deb]=$(size_of "$work/cargo-deb.deb")
  printf '%-42s %10s %12s\n' "cargo deb --no-build (defaults)" "${time[cargo-deb]}" "${size[cargo-deb]}"
  printf '%-42s %10s %12s\n' "ferry pack (defaults), paired with it" "${time[ferry-paired]}" "${size[ferry-zstd]}"
else
  echo "cargo deb failed:" >&2; cat "$work/cargo-deb.log" >&2
  time[cargo-deb]=0
fi

echo
echo "ratios (ferry time / baseline time; below 1 means ferry is faster):"
echo "  ferry default / dpkg-deb -Zzstd -z3: $(ratio "${time[ferry-zstd]}" "${time[dpkg-zstd]}")×   (goal ≤ 1.10)"
echo "  ferry default / (md5sum + dpkg-deb -Zzstd -z3): $(ratio "${time[ferry-zstd-2]}" "${time[dpkg-md5]}")×"
for compression in xz gzip; do
  echo "  ferry $compression / dpkg-deb $compression: $(ratio "${time[ferry-$compression]}" "${time[dpkg-$compression]}")×"
done
if [ "${time[cargo-deb]}" != 0 ]; then
  echo "  cargo deb / ferry default: $(ratio "${time[cargo-deb]}" "${time[ferry-paired]}")× faster   (goal ≥ 50)"
fi
