#!/usr/bin/env bash
# The GRPO step benchmark (W1, W2), back to back: lmmhost, then TRL on the same
# model config and prompts; prints both and the ratio.
#   bench/run.sh [w1|w2|all] [steps] [threads]
# Needs: target/release/lmmhost (cargo build --release -p lmmhost), the plugins
# (scripts/build-plugins.sh) and .venv-trl (bench/trl/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-all}
STEPS=${2:-5}
THREADS=${3:-2}
BIN=${LMMHOST:-target/release/lmmhost}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p lmmhost" >&2; exit 1; }
[ -x .venv-trl/bin/python ] || { echo "no .venv-trl: bench/trl/setup.sh" >&2; exit 1; }
OUT=runs/bench-compare
mkdir -p "$OUT"
[ "$WL" = all ] && WLS="w1 w2" || WLS=$WL
for w in $WLS; do
    echo "== $w: load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M:%SZ)"
    "$BIN" bench grpo --workload "$w" --export-prompts "$OUT/$w-prompts.jsonl" --export-count $((16 * (STEPS + 1)))
    "$BIN" bench grpo --workload "$w" --steps "$STEPS" --threads "$THREADS" --json "$OUT/$w-lmmhost.json"
    .venv-trl/bin/python bench/trl/grpo_trl.py --workload "$w" --prompts "$OUT/$w-prompts.jsonl" \
        --steps "$STEPS" --threads "$THREADS" --json "$OUT/$w-trl.json" 2> "$OUT/$w-trl.stderr" \
        || { tail -30 "$OUT/$w-trl.stderr" >&2; exit 1; }
    python3 - "$OUT/$w-lmmhost.json" "$OUT/$w-trl.json" "$w" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"== {sys.argv[3]}: lmmhost {a['time/step']:.3f} s/step, TRL {b['time/step']:.3f} s/step: "
      f"lmmhost is {b['time/step'] / a['time/step']:.2f}x faster")
for k in ["time/rollout", "time/logprobs", "time/forward", "time/backward", "time/optimizer"]:
    print(f"   {k:<16} {a.get(k, float('nan')):7.3f} s   TRL {b.get(k, float('nan')):7.3f} s")
PY
    echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
