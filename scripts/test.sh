#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
printf '\n==> format and lints\n'
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
printf '\n==> tests\n'
cargo test --release --workspace --no-fail-fast
