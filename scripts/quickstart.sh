#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the embedded quickstart:
# a tiny Qwen2.5-VL trained from random init through cold start -> FRE -> MGT
# on synthetic tasks, on CPU (docs/quickstart.md). Extra arguments go to
# `lmmhost run` (e.g. --resume). Results land in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
printf '\n==> quickstart (configs/quickstart.toml)\n'
exec target/release/lmmhost run configs/quickstart.toml "$@"
