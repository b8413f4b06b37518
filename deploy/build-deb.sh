#!/bin/sh
# Build the Debian package (needs cargo-deb: `cargo install cargo-deb`):
#   deploy/build-deb.sh [--profile PROFILE] [--target TRIPLE] [cargo-deb options...]
# builds lineguard (the release profile unless told otherwise), writes its
# man pages and shell completions into target/assets with `lineguard
# assets`, then packages: target/[TRIPLE/]debian/lineguard_<version>-1_<arch>.deb
# (stripped) and lineguard-dbgsym_<version>-1_<arch>.ddeb (the debug symbols).
set -eu
cd "$(dirname "$0")/.."
profile=release
target=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --target) target=$2; shift 2 ;;
        *) break ;;
    esac
done
out="${CARGO_TARGET_DIR:-target}"
if [ -n "$target" ]; then
    cargo build --locked --profile "$profile" --target "$target" --bin lineguard
    # The assets do not depend on the architecture: write them with a build
    # that runs here.
    cargo run --locked --quiet --bin lineguard -- assets --out target/assets
    cargo deb --no-build --profile "$profile" --target "$target" "$@"
else
    cargo build --locked --profile "$profile" --bin lineguard
    "$out/$profile/lineguard" assets --out target/assets
    cargo deb --no-build --profile "$profile" "$@"
fi
