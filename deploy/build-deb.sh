#!/bin/sh
# Build the Debian package with cargo-deb (`cargo install cargo-deb`), from a
# chosen Cargo profile (the release profile unless told otherwise):
#   deploy/build-deb.sh [--profile PROFILE] [cargo-deb options...]
# -> target/[TRIPLE/]debian/lineguard_<version>-1_<arch>.deb, and, when the
# profile keeps debug information, lineguard-dbgsym_<version>-1_<arch>.ddeb.
# `cargo deb` alone does the same for the release profile.
set -eu
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--profile" ]; then
    profile=$2
    shift 2
fi
exec cargo deb --locked --profile "$profile" "$@"
