#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the embedded quickstart:
# a tiny Qwen2.5-VL trained from random init through cold start -> FRE -> MGT
# on synthetic tasks, on CPU (docs/quickstart.md). Extra arguments go to
# `lmmhost run` (e.g. --resume). Results land in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The same floating-point kernels on every x86-64 machine with AVX2: MKL's
# conditional numerical reproducibility branch and ATen's vector kernels
# (both otherwise pick per CPU: AVX-512 on one machine, AVX2 on another).
export MKL_CBWR="${MKL_CBWR:-AVX2}"
export ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-avx2}"
printf '\n==> quickstart (configs/quickstart.toml)\n'
exec target/release/lmmhost run configs/quickstart.toml "$@"
