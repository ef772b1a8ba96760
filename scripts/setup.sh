#!/usr/bin/env bash
# Sets up a fresh machine for lmmhost, idempotently:
#   1. the wasm32-wasip2 Rust target (plugins are WebAssembly components) and
#      clang (for the one C codec a plugin carries, zstd),
#   2. a project-local virtualenv (.venv) with torch==2.13.0 (libtorch for tch),
#   3. the fixture virtualenv (.venv-fixtures): transformers and Pillow from PyPI,
#      torch from .venv; the parity tests load checkpoints written by lmmhost in
#      it, and scripts/fixtures/ regenerate the fixtures with it,
#   4. a release build of the host (`target/release/lmmhost`) and of every plugin
#      (`target/plugins/*.wasm`).
# A second run only checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
TORCH_VERSION=2.13.0
TRANSFORMERS_VERSION=5.23.0
PILLOW_VERSION=13.0.0

step() { printf '\n==> %s\n' "$*"; }

step "Rust target wasm32-wasip2"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

step "clang (compiles loader-parquet's zstd codec, C, for wasm32-wasip2)"
if ! command -v clang >/dev/null; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
    else
        echo "error: install clang (needed to build the zstd codec of loader-parquet)" >&2
        exit 1
    fi
fi

step "virtualenv .venv with torch==$TORCH_VERSION"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [ "${have%%+*}" != "$TORCH_VERSION" ]; then
    # The wheel and its CUDA libraries take about 5 GiB once installed; without a
    # cache pip does not keep a second copy of the downloads.
    free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
    if [ "${free_kib:-0}" -lt $((8 * 1024 * 1024)) ]; then
        echo "warning: $((free_kib / 1024)) MiB free here; torch needs about 5 GiB and the build about 8 GiB more" >&2
    fi
    .venv/bin/pip install --disable-pip-version-check --no-cache-dir -q "torch==$TORCH_VERSION"
fi
torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null | tail -n1)
ln -sfn "$torch_dir" .venv/libtorch

step "fixture virtualenv .venv-fixtures with transformers==$TRANSFORMERS_VERSION"
if [ ! -x .venv-fixtures/bin/python ]; then
    python3 -m venv .venv-fixtures
fi
# torch comes from .venv (a second copy would take 5 GiB): a .pth file puts
# .venv's site-packages on the fixture venv's path.
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib .venv/bin/python > "$(purelib .venv-fixtures/bin/python)/lmmhost-torch.pth"
have_tf=$(.venv-fixtures/bin/python -c 'import importlib.metadata as m; print(m.version("transformers"))' 2>/dev/null || true)
have_pil=$(.venv-fixtures/bin/python -c 'import importlib.metadata as m; print(m.version("pillow"))' 2>/dev/null || true)
if [ "$have_tf" != "$TRANSFORMERS_VERSION" ] || [ "$have_pil" != "$PILLOW_VERSION" ]; then
    .venv-fixtures/bin/pip install --disable-pip-version-check --no-cache-dir -q \
        "transformers==$TRANSFORMERS_VERSION" "pillow==$PILLOW_VERSION"
fi

step "host (release)"
cargo build --release -p lmmhost

step "plugins (wasm32-wasip2)"
scripts/build-plugins.sh
