#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU and PyTorch (2.11 for a pack
# built by scripts/gpu-pack.sh), with lmmhost built elsewhere, it measures
# within ~8 minutes and writes one report (gpu-check.md + gpu-check.json):
#   1. forward parity on the shipped fixtures: f32 and bf16 on the device and
#      f32 on the CPU, all from this binary, against transformers' CPU f32
#      logits (bounds: 1e-4; 6 units of bf16 rounding of the logit range),
#   2. GRPO steps in bf16 on a random model of Qwen2.5-VL-3B's shape at
#      64 prompts x 8 samples x 1,024 prompt + 1,024 response tokens (smaller
#      fallbacks when a size fails, e.g. out of memory): tokens/s, the rollout
#      engine's generated tokens/s, peak GPU memory and the time split,
#   3. the same with activation checkpointing and with LoRA, when this binary
#      knows those settings,
#   4. two GRPO steps on one rank through a process group of one (NCCL on a
#      GPU), against the same steps without one.
# Every part runs on the CPU with the tiny models too (the test
# host/tests/gpu_check.rs runs `GPU_CHECK_DEVICE=cpu scripts/gpu-check.sh --tiny`).
#
# Usage: scripts/gpu-check.sh [--tiny] [--out DIR]
# Run from the repository root or the packed folder. Environment:
#   GPU_CHECK_DEVICE  cuda (default), cuda:N or cpu
#   GPU_CHECK_DTYPE   dtype of the GRPO steps (default bf16)
#   GPU_CHECK_BUDGET  seconds the whole check may take (default 450)
#   LMMHOST           the binary (default ./lmmhost, else target/release/lmmhost)
#   OUT               the report folder when --out is not given (default ./gpu-check-report)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tiny=0
out=${OUT:-$root/gpu-check-report}
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) tiny=1 ;;
        --out) out=$2; shift ;;
        *) echo "usage: $0 [--tiny] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
device=${GPU_CHECK_DEVICE:-cuda}
dtype=${GPU_CHECK_DTYPE:-bf16}
budget=${GPU_CHECK_BUDGET:-450}
bin=${LMMHOST:-}
if [ -z "$bin" ]; then
    for b in "$root/lmmhost" "$root/target/release/lmmhost"; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "error: no lmmhost binary (set LMMHOST or run scripts/gpu-pack.sh)" >&2
    exit 1
fi
mkdir -p "$out/runs" "$out/logs"
out=$(cd "$out" && pwd)

# A binary built elsewhere finds this machine's libtorch through the
# installed PyTorch (its rpath names the build machine's).
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null | tail -n1)
if [ -n "$torch_lib" ] && [ -d "$torch_lib" ]; then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }

# Each step appends one JSON line to steps.jsonl: name, status, seconds, the
# log file and, where the command wrote one, its JSON figures.
steps="$out/steps.jsonl"
: > "$steps"
record() { # name status seconds log [json-file]
    python3 - "$@" >> "$steps" <<'EOF'
import json, sys
name, status, secs, log = sys.argv[1:5]
figs = None
if len(sys.argv) > 5:
    try:
        figs = json.load(open(sys.argv[5]))
    except (OSError, ValueError):
        figs = None
tail = open(log, errors="replace").read().splitlines()[-15:] if log else []
print(json.dumps({"name": name, "status": status, "seconds": float(secs), "log": log, "figures": figs, "tail": tail}))
EOF
}
# run NAME CAP_SECONDS [--json FILE] -- ARGS...: one lmmhost command under a
# timeout of CAP or the time left, whichever is less; returns its status.
run() {
    local name=$1 cap=$2; shift 2
    local json=""
    if [ "$1" = "--json" ]; then json=$2; shift 2; fi
    shift # --
    local t=$(left)
    [ "$cap" -lt "$t" ] && t=$cap
    local log="$out/logs/$name.log"
    if [ "$t" -lt 10 ]; then
        echo "skipped: out of time" > "$log"
        record "$name" skipped-time 0 "$log"
        return 3
    fi
    echo "==> $name (limit ${t}s): lmmhost $*"
    local s0=$(date +%s)
    timeout "$t" "$bin" "$@" > "$log" 2>&1
    local rc=$?
    local secs=$(( $(date +%s) - s0 ))
    local status=ok
    [ $rc -eq 124 ] && status=timeout
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="failed (exit $rc)"
    tail -n 3 "$log"
    record "$name" "$status" "$secs" "$log" ${json:+"$json"}
    return $rc
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "device: $device, GRPO dtype: $dtype, tiny: $tiny, budget: ${budget}s"
    echo "binary: $bin ($(du -h "$bin" | cut -f1))"
    python3 -c 'import torch; print("python torch:", torch.__version__, "cuda:", torch.version.cuda, "gpus:", torch.cuda.device_count())' 2>&1 | tail -n1
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

# 1. Parity: the device in f32 and bf16, the CPU in f32, one binary.
run parity-$device-f32 90 --json "$out/parity-device-f32.json" -- bench parity --device "$device" --dtype f32 --json "$out/parity-device-f32.json"
run parity-$device-bf16 90 --json "$out/parity-device-bf16.json" -- bench parity --device "$device" --dtype bf16 --json "$out/parity-device-bf16.json"
[ "$device" != cpu ] && run parity-cpu-f32 90 --json "$out/parity-cpu-f32.json" -- bench parity --device cpu --dtype f32 --json "$out/parity-cpu-f32.json"

# 2. GRPO steps. Sizes: prompts group prompt-tokens response-tokens micro-batch.
if [ "$tiny" = 1 ]; then
    model=configs/models/tiny-qwen2.5-vl
    sizes=("2 2 100 4 4")
    cap=120
else
    model=configs/models/qwen2.5-vl-3b
    sizes=("64 8 1024 1024 8" "32 8 1024 1024 8" "16 8 1024 512 8" "8 8 512 256 8")
    cap=240
fi
grpo() { # name size [extra lmmhost args...]
    local name=$1 size=$2; shift 2
    local p g lp lr mb
    read -r p g lp lr mb <<< "$size"
    run "$name" "$cap" --json "$out/$name.json" -- bench grpo --model "$model" --device "$device" \
        --dtype "$dtype" --prompts "$p" --group-size "$g" --prompt-tokens "$lp" \
        --response-tokens "$lr" --micro-batch "$mb" --steps 1 --warmup 0 \
        --set "output_dir=\"$out/runs/bench-grpo-$name\"" --json "$out/$name.json" "$@"
}
chosen=""
i=0
for size in "${sizes[@]}"; do
    i=$((i + 1))
    if grpo "grpo-$i" "$size"; then chosen=$size; break; fi
done

# 3. Variants at the size that ran, when this binary knows their settings.
supports() {
    "$bin" bench grpo --workload w1 --set "$1" --check-only > /dev/null 2>&1
}
if [ -n "$chosen" ]; then
    if supports model.activation_checkpointing=true; then
        grpo grpo-checkpointing "$chosen" --set model.activation_checkpointing=true
    else
        echo "skipped: this binary has no model.activation_checkpointing" > "$out/logs/grpo-checkpointing.log"
        record grpo-checkpointing unsupported 0 "$out/logs/grpo-checkpointing.log"
    fi
    if supports "model.lora={rank=16, alpha=32}"; then
        grpo grpo-lora "$chosen" --set "model.lora={rank=16, alpha=32}"
    else
        echo "skipped: this binary has no model.lora" > "$out/logs/grpo-lora.log"
        record grpo-lora unsupported 0 "$out/logs/grpo-lora.log"
    fi
fi

# 4. One rank with a process group (NCCL on a GPU, Gloo on the CPU): two
#    GRPO steps of W1 through every collective of the step, against the same
#    steps without a group. The first step's loss must agree (same weights,
#    same samples) and the grouped run must have moved bytes each step
#    (its gradient all-reduce overlapped with the backward from hooks on the
#    GPU's autograd threads; dist/overlap is reported).
onerank() { # name [extra lmmhost args...]
    local name=$1; shift
    run "$name" 120 -- run configs/bench/w1.toml --max-steps 2 --set "model.device=\"$device\"" \
        --set model.workers=1 --set rollout.prompts_per_step=4 --set rollout.group_size=4 \
        --set "output_dir=\"$out/runs/$name\"" "$@"
}
onerank one-rank-plain
onerank one-rank-group --nproc 1 --set distributed.group_of_one=true
python3 - "$out" > "$out/one-rank.status" <<'EOF'
import json, sys
out = sys.argv[1]
def steps(name):
    try:
        return [json.loads(l) for l in open(f"{out}/runs/{name}/metrics.jsonl") if l.strip()]
    except OSError:
        return []
plain, group = steps("one-rank-plain"), steps("one-rank-group")
rows = []
for a, b in zip(plain, group):
    va, vb = a.get("values", a), b.get("values", b)
    rows.append({"step": a.get("step"), "loss": va.get("loss"), "loss_group": vb.get("loss"),
                 "grad_norm": va.get("grad_norm"), "grad_norm_group": vb.get("grad_norm"),
                 "dist/bytes": vb.get("dist/bytes"), "dist/overlap": vb.get("dist/overlap")})
ok = len(rows) == 2 and all((r["dist/bytes"] or 0) > 0 for r in rows)
if ok:
    a, b = rows[0]["loss"], rows[0]["loss_group"]
    ok = a is not None and b is not None and abs(a - b) <= 1e-3 * max(1.0, abs(a))
json.dump({"rows": rows, "ok": ok}, open(f"{out}/one-rank.json", "w"), indent=1)
print("ok" if ok else "failed")
EOF
record one-rank-compare "$(cat "$out/one-rank.status")" 0 "$out/logs/one-rank-group.log" "$out/one-rank.json"

# The report: markdown for people, JSON for tools.
python3 - "$out" "$steps" <<'EOF'
import json, sys
out, steps_path = sys.argv[1], sys.argv[2]
steps = [json.loads(l) for l in open(steps_path) if l.strip()]
env = open(f"{out}/environment.txt").read().strip()
md = ["# lmmhost GPU check", "", "```", env, "```", "", "## Forward parity", ""]
md += ["| run | status | case | max diff | bound | ok |", "|---|---|---|---|---|---|"]
for s in steps:
    if not s["name"].startswith("parity"):
        continue
    cases = (s["figures"] or {}).get("cases") or []
    if not cases:
        md.append(f"| {s['name']} | {s['status']} | | | | |")
    for c in cases:
        md.append(f"| {s['name']} | {s['status']} | {c['model']} on {c['inputs']} | {c['max_diff']:.3e} | {c['bound']:.3e} | {'yes' if c['ok'] else 'NO'} |")
md += ["", "## GRPO steps", ""]
md += ["| run | status | s | prompts x group | prompt/response tokens | step s | rollout s | logprobs s | update s | tokens/s | generated tokens/s | peak memory MiB |",
       "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for s in steps:
    if not s["name"].startswith("grpo"):
        continue
    f = s["figures"] or {}
    g = lambda k: f.get(k)
    num = lambda v, fmt="{:.1f}": "" if v is None else fmt.format(v)
    update = None
    if g("time/forward") is not None:
        update = sum(g(k) or 0 for k in ("time/forward", "time/backward", "time/optimizer"))
    md.append("| {} | {} | {:.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        s["name"], s["status"], s["seconds"],
        f"{g('prompts')} x {g('group_size')}" if f else "",
        f"{num(g('prompt_length/mean'), '{:.0f}')} / {num(g('response_length/mean'), '{:.0f}')}" if f else "",
        num(g("time/step"), "{:.2f}"), num(g("time/rollout"), "{:.2f}"), num(g("time/logprobs"), "{:.2f}"),
        num(update, "{:.2f}"), num(g("throughput/tokens_per_s"), "{:.0f}"),
        num(g("throughput/gen_tokens_per_s"), "{:.0f}"), num(g("peak_memory_mb"), "{:.0f}")))
md += ["", "## One rank with a process group", "",
       "Two GRPO steps of W1 with `--nproc 1 --set distributed.group_of_one=true` (NCCL on a GPU) against the same steps without a group.", ""]
for s in steps:
    if s["name"] != "one-rank-compare":
        continue
    md += [f"status: {s['status']}", "",
           "| step | loss | loss with group | grad norm | grad norm with group | dist/bytes | dist/overlap |", "|---|---|---|---|---|---|---|"]
    for r in (s["figures"] or {}).get("rows", []):
        md.append("| {} | {} | {} | {} | {} | {} | {} |".format(*(r.get(k) for k in ("step", "loss", "loss_group", "grad_norm", "grad_norm_group", "dist/bytes", "dist/overlap"))))
failed = [s for s in steps if s["status"] not in ("ok", "unsupported")]
if failed:
    md += ["", "## Steps that did not finish", ""]
    for s in failed:
        md += [f"### {s['name']}: {s['status']}", "", "```", *s["tail"], "```", ""]
open(f"{out}/gpu-check.md", "w").write("\n".join(md) + "\n")
json.dump({"environment": env, "steps": steps}, open(f"{out}/gpu-check.json", "w"), indent=1)
print("\n".join(md))
EOF
echo "report: $out/gpu-check.md, $out/gpu-check.json ($(( $(date +%s) - start )) s)"
