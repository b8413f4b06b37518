#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each).
#   fuzz/run.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the
# sanitizer flags are allowed through RUSTC_BOOTSTRAP; crashes land in
# fuzz/artifacts/TARGET/ — copy them to tests/fixtures/fuzz/TARGET/ once
# fixed, where tests/e2e/fuzz_regressions.rs replays them on every `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
for target in decode card topic; do
  mkdir -p "corpus/$target"
  seeds="../tests/fixtures/fuzz/$target"
  echo "== fuzz $target for ${secs}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" "$seeds" -- \
    -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048
done
