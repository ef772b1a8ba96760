#!/usr/bin/env bash
# Builds every plugin crate under plugins/ (and the hostile test plugins under
# tests/plugins/) as a WebAssembly component and copies them to target/plugins/.
# One cargo invocation per plugin: the SDK enables only the world a plugin
# exports (cargo features), and features would be unified across one invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p target/plugins
for dir in plugins/*/ tests/plugins/*/; do
    [ -f "$dir/Cargo.toml" ] || continue
    pkg=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -n1)
    cargo build --quiet --profile wasm --target wasm32-wasip2 -p "$pkg"
    src="$target_dir/wasm32-wasip2/wasm/${pkg//-/_}.wasm"
    cmp -s "$src" "target/plugins/$pkg.wasm" || cp "$src" "target/plugins/$pkg.wasm"
done
# The example plugins (plugins/examples/: one rule in Rust, Python and
# JavaScript; tests/polyglot.rs compares them).
scripts/build-example-plugins.sh all >/dev/null
echo "plugins in target/plugins/: $(cd target/plugins && ls | tr '\n' ' ')"
