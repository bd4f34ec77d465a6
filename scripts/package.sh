#!/usr/bin/env bash
# Build the Debian package: target/debian/tracer_<version>-1_<arch>.deb, from the
# [package.metadata.deb] table of Cargo.toml (binary, systemd unit, /etc/tracer/tracer.toml
# as a conffile, demo feeds, enricher template, the `tracer` system user).
#
#   scripts/package.sh                 # release build + .deb, binary stripped
#   scripts/package.sh --dbgsym        # debug symbols in a separate tracer-dbgsym .ddeb
#   scripts/package.sh --fast          # other arguments go to `cargo deb`
#
# The release profile keeps debug info (for profiling), which would make /usr/bin/tracer
# about 60 MB: it is stripped unless an argument says what to do with debug symbols.
#
# Installs cargo-deb (`cargo install cargo-deb --locked`, from crates.io) when it is
# missing. Check the result with `dpkg-deb -c` (files) and `dpkg-deb -I` (control).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is missing: installing it (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked
fi
strip=(--strip)
for a in "$@"; do
  case $a in --dbgsym | --separate-debug-symbols | --no-strip | --strip) strip=() ;; esac
done
cargo deb -p tracer "${strip[@]}" "$@"
deb=$(ls -t target/debian/tracer_*.deb | awk 'NR == 1')
echo "$deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
