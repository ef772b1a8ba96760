#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine into one folder of
# at most 60 MiB: lmmhost built against that machine's PyTorch (default
# 2.11.0) and stripped, the plugins the benchmarks load, the model configs,
# the benchmark experiments and the parity fixtures.
#
# Usage: scripts/gpu-pack.sh [--out DIR]   (default dist/gpu-check)
# Environment:
#   LMMHOST_TORCH      PyTorch version to build against (default 2.11.0)
#   LMMHOST_TORCH_DIR  its torch/ package folder (default: ask LMMHOST_PYTHON)
#   LMMHOST_PYTHON     a python with that torch (default .venv/bin/python)
#   CARGO_TARGET_DIR   where to build (default target/torch-$LMMHOST_TORCH)
#   LMMHOST            an already built binary to pack instead of building
# The build runs in a copy of the tracked sources (target/torch-VERSION-src)
# so that this tree's Cargo.lock keeps the default tch.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/torch-versions.sh
out=$root/dist/gpu-check
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift ;;
        *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
limit_mib=60
torch=${LMMHOST_TORCH:-2.11.0}

bin=${LMMHOST:-}
if [ -z "$bin" ]; then
    tch=$(tch_for_torch "$torch") || {
        echo "error: PyTorch $torch is not supported (choose one of $SUPPORTED_TORCH)" >&2
        exit 1
    }
    torch_dir=${LMMHOST_TORCH_DIR:-}
    if [ -z "$torch_dir" ]; then
        py=${LMMHOST_PYTHON:-.venv/bin/python}
        have=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null | tail -n1 || true)
        if [ "${have%%+*}" != "$torch" ]; then
            echo "error: $py has torch '${have:-none}', not $torch: set LMMHOST_PYTHON or LMMHOST_TORCH_DIR" >&2
            exit 1
        fi
        torch_dir=$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))' | tail -n1)
    fi
    src=$root/target/torch-$torch-src
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/torch-$torch}
    echo "==> sources to $src, tch $tch for PyTorch $torch ($torch_dir)"
    mkdir -p "$src"
    git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$src"
    (cd "$src" && cargo update -q -p tch --precise "$tch")
    echo "==> cargo build --release -p lmmhost in $CARGO_TARGET_DIR"
    (cd "$src" && LIBTORCH="$torch_dir" cargo build --release -p lmmhost)
    bin=$CARGO_TARGET_DIR/release/lmmhost
fi

echo "==> packing into $out"
rm -rf "$out"
mkdir -p "$out/target/plugins" "$out/configs/models" "$out/tests/fixtures" "$out/scripts"
strip -o "$out/lmmhost" "$bin"
for p in loader-synthetic loader-jsonl reward-math schedule-staged; do
    if [ ! -f "target/plugins/$p.wasm" ]; then
        echo "error: target/plugins/$p.wasm missing: run scripts/build-plugins.sh" >&2
        exit 1
    fi
    cp "target/plugins/$p.wasm" "$out/target/plugins/"
done
cp -r configs/bench "$out/configs/"
for m in char-qwen2 tiny-qwen2.5-vl tiny-qwen3-vl qwen2.5-vl-3b; do
    cp -r "configs/models/$m" "$out/configs/models/"
done
cp -r tests/fixtures/model "$out/tests/fixtures/"
cp scripts/gpu-check.sh "$out/scripts/"
bytes=$(du -sb "$out" | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "packed: $out, $mib MiB (binary $(( $(stat -c %s "$out/lmmhost") / 1048576 )) MiB)"
if [ "$mib" -gt "$limit_mib" ]; then
    echo "error: the pack is $mib MiB, over the ${limit_mib} MiB the device machine takes" >&2
    exit 1
fi
