#!/usr/bin/env bash
# Creates .venv-trl (repository root) with the pinned TRL stack of the GRPO
# benchmark. It is separate from .venv (the model's parity fixtures) so the
# benchmark's packages never change what the tests use.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if [ ! -x .venv-trl/bin/python ]; then
    "$PY" -m venv .venv-trl
fi
.venv-trl/bin/pip install -q -r bench/trl/requirements.txt
.venv-trl/bin/python -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
