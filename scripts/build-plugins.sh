#!/usr/bin/env bash
# Builds every plugin crate under plugins/ (and the hostile test plugins under
# tests/plugins/) as a WebAssembly component and copies them to target/plugins/.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=()
for dir in plugins/*/ tests/plugins/*/; do
    [ -f "$dir/Cargo.toml" ] || continue
    pkgs+=(-p "$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -n1)")
done
[ ${#pkgs[@]} -gt 0 ] || { echo "no plugin crates found"; exit 0; }
cargo build --release --target wasm32-wasip2 "${pkgs[@]}"
mkdir -p target/plugins
for f in target/wasm32-wasip2/release/*.wasm; do
    name=$(basename "$f" .wasm)
    cp -u "$f" "target/plugins/${name//_/-}.wasm"
done
echo "plugins in target/plugins/: $(ls target/plugins | tr '\n' ' ')"
