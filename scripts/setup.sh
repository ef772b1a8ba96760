#!/usr/bin/env bash
# Sets up a fresh machine for lmmhost, idempotently:
#   1. the wasm32-wasip2 Rust target (plugins are WebAssembly components) and
#      clang (for the one C codec a plugin carries, zstd),
#   2. a project-local virtualenv (.venv) with torch==2.13.0 (libtorch for tch),
#      or the PyTorch chosen by LMMHOST_TORCH=2.11.0 (built with tch 0.24, the
#      version Cargo.lock then pins), or an existing installation named by
#      LMMHOST_TORCH_DIR=/path/to/site-packages/torch (linked, not installed),
#   3. the fixture virtualenv (.venv-fixtures): transformers, Pillow and PEFT from PyPI,
#      torch from .venv; the parity tests load checkpoints written by lmmhost in
#      it, and scripts/fixtures/ regenerate the fixtures with it,
#   4. a release build of the host (`target/release/lmmhost`) and of every plugin
#      (`target/plugins/*.wasm`).
# A second run only checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/torch-versions.sh
if [ -n "${LMMHOST_TORCH_DIR:-}" ]; then
    # The version of an existing torch package, from its version.py.
    LMMHOST_TORCH=$(sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$LMMHOST_TORCH_DIR/version.py" 2>/dev/null | head -n1)
    if [ -z "$LMMHOST_TORCH" ]; then
        echo "error: $LMMHOST_TORCH_DIR/version.py names no torch version (LMMHOST_TORCH_DIR must be a torch package folder)" >&2
        exit 1
    fi
fi
TORCH_VERSION=${LMMHOST_TORCH:-2.13.0}
TORCH_VERSION=${TORCH_VERSION%%+*}
if ! TCH_VERSION=$(tch_for_torch "$TORCH_VERSION"); then
    echo "error: PyTorch $TORCH_VERSION is not supported; choose one of: $SUPPORTED_TORCH" >&2
    exit 1
fi
TRANSFORMERS_VERSION=5.23.0
PILLOW_VERSION=13.0.0
# PEFT (and the accelerate it needs) for the LoRA adapter checks.
PEFT_VERSION=0.21.2
ACCELERATE_VERSION=1.16.0

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
if [ -n "${LMMHOST_TORCH_DIR:-}" ]; then
    echo "using the torch in $LMMHOST_TORCH_DIR ($TORCH_VERSION)"
elif [ "${have%%+*}" != "$TORCH_VERSION" ]; then
    # The wheel and its CUDA libraries take about 5 GiB once installed; without a
    # cache pip does not keep a second copy of the downloads.
    free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
    if [ "${free_kib:-0}" -lt $((8 * 1024 * 1024)) ]; then
        echo "warning: $((free_kib / 1024)) MiB free here; torch needs about 5 GiB and the build about 8 GiB more" >&2
    fi
    .venv/bin/pip install --disable-pip-version-check --no-cache-dir -q "torch==$TORCH_VERSION"
fi
if [ -n "${LMMHOST_TORCH_DIR:-}" ]; then
    torch_dir=$(cd "$LMMHOST_TORCH_DIR" && pwd)
else
    torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null | tail -n1)
fi
ln -sfn "$torch_dir" .venv/libtorch

step "tch $TCH_VERSION for PyTorch $TORCH_VERSION"
locked=$(awk '/^name = "tch"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
if [ "$locked" != "$TCH_VERSION" ]; then
    # Cargo.toml accepts every supported tch; the lock file picks one.
    cargo update -q -p tch --precise "$TCH_VERSION"
    echo "Cargo.lock now pins tch $TCH_VERSION (git checkout Cargo.lock returns to the default)"
fi

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
have_peft=$(.venv-fixtures/bin/python -c 'import importlib.metadata as m; print(m.version("peft"))' 2>/dev/null || true)
have_acc=$(.venv-fixtures/bin/python -c 'import importlib.metadata as m; print(m.version("accelerate"))' 2>/dev/null || true)
if [ "$have_tf" != "$TRANSFORMERS_VERSION" ] || [ "$have_pil" != "$PILLOW_VERSION" ] \
    || [ "$have_peft" != "$PEFT_VERSION" ] || [ "$have_acc" != "$ACCELERATE_VERSION" ]; then
    .venv-fixtures/bin/pip install --disable-pip-version-check --no-cache-dir -q \
        "transformers==$TRANSFORMERS_VERSION" "pillow==$PILLOW_VERSION" \
        "peft==$PEFT_VERSION" "accelerate==$ACCELERATE_VERSION"
fi

step "host (release)"
cargo build --release -p lmmhost

step "plugins (wasm32-wasip2)"
scripts/build-plugins.sh
