#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for a fixed budget and
# prints the executions each made. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# (default 60 s each, every target). Needs cargo-fuzz (`cargo install
# cargo-fuzz`); the stable toolchain runs with RUSTC_BOOTSTRAP=1 for the
# coverage flags. SANITIZER=address adds ASan (default none: the targets are
# safe Rust, and none keeps the build to the coverage instrumentation).
# The repo's corpus (fuzz/corpus/<target>/) is read, never written: new
# inputs go to a scratch directory; a crash is saved under fuzz/artifacts/.
# A finding is fixed with its input added to fuzz/corpus/<target>/, which
# host/tests/fuzz_corpus.rs replays on stable in every test run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
budget=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(rows math_answer chat_template bundle experiment)
fi
sanitizer=${SANITIZER:-none}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# The targets that reach the model crate link libtorch; the fuzz workspace's
# binaries get no rpath (only the project's own packages add one).
export LD_LIBRARY_PATH="$PWD/../.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo fuzz build --fuzz-dir . -s "$sanitizer"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf '%-14s %10s %12s %8s\n' target seconds executions corpus
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" artifacts/"$t"
    log="$scratch/$t.log"
    if ! cargo fuzz run --fuzz-dir . -s "$sanitizer" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$budget" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix=artifacts/"$t"/ >"$log" 2>&1; then
        tail -n 40 "$log"
        if grep -q 'Test unit written to' "$log"; then
            echo "fuzz target $t found a crash: see fuzz/artifacts/$t/" >&2
        else
            echo "fuzz target $t did not run (see the log above)" >&2
        fi
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    units=$(ls "$scratch/$t" corpus/"$t" | wc -l)
    printf '%-14s %10s %12s %8s\n' "$t" "$budget" "${execs:-?}" "$units"
done
