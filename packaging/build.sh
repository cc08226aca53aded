#!/usr/bin/env bash
# Build ferry's own Debian package from the workspace root:
#
#   packaging/build.sh            # prints the path of the .deb (in target/ferry-deb/)
#
# It builds ferry in release mode, puts a stripped copy at packaging/build/ferry (lintian
# refuses unstripped binaries), generates the shell completions and man pages from that
# binary into packaging/build/, and packs packaging/ferry.toml with the binary's version.
# Publish the result like any app (`ferry publish --app ferry …`) so servers can install and
# update the agent from the same store (docs/provisioning.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ferry
build=packaging/build
rm -rf "$build"
install -D --strip target/release/ferry "$build/ferry"
ferry="$build/ferry"
"$ferry" completions bash >"$build/ferry.bash"
"$ferry" completions zsh >"$build/_ferry"
"$ferry" completions fish >"$build/ferry.fish"
"$ferry" -q manpages "$build/man" >/dev/null
gzip -9n "$build"/man/*.1
version="$("$ferry" --version | cut -d' ' -f2)-1"
"$ferry" -q pack --config packaging/ferry.toml --version "$version" --out target/ferry-deb
