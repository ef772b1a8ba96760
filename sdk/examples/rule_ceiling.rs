//! The ceiling of the reward path through Wasm: the math + R1 format rule
//! timed on completions already in memory, with no boundary crossed. Built
//! natively and for `wasm32-wasip2`, it runs the same code on the same inputs
//! (`lmmhost_sdk::bench::synthetic_completions`, as `lmmhost bench reward`
//! scores) on one thread, so the ratio of the two runs bounds what any
//! contract between host and plugin can reach (docs/performance.md):
//!
//! ```sh
//! cargo run --release -p lmmhost-sdk --example rule_ceiling
//! cargo build --profile wasm --target wasm32-wasip2 -p lmmhost-sdk --example rule_ceiling
//! cargo run --release -p lmmhost-plugin-host --example wasi_run -- \
//!     $CARGO_TARGET_DIR/wasm32-wasip2/wasm/examples/rule_ceiling.wasm
//! ```
//!
//! Besides the whole rule it times its phases (answer extraction, the R1
//! format check, the equivalence test on the benchmark's answer pairs) and
//! what lifting the inputs costs a guest at least: owned copies of the
//! completions, each with its own sample (contract 0.1.0) or one sample per
//! group of 8 responses.

use std::hint::black_box;
use std::time::Instant;

use lmmhost_sdk::answer::{extract_answer, is_r1_format, Extractor};
use lmmhost_sdk::bench::synthetic_completions;
use lmmhost_sdk::math::equivalent;
use lmmhost_sdk::rules::format::FormatRule;
use lmmhost_sdk::rules::math::MathAccuracy;
use lmmhost_sdk::{Completion, Reward, Score};

const N: usize = 20_000;
const ROUNDS: usize = 9;

/// Nanoseconds per item of `f` (which handles `f()` items): the fastest of
/// `ROUNDS` rounds, as other jobs on a shared machine only ever add time.
fn per_item(mut f: impl FnMut() -> usize) -> f64 {
    let v: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let n = black_box(f());
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .collect();
    v.into_iter().fold(f64::INFINITY, f64::min)
}

/// The rule on every completion, one after another.
fn score_all(rule: &impl Reward, batch: &[Completion]) -> Vec<Result<Score, String>> {
    batch.iter().map(|c| rule.score(c)).collect()
}

fn main() {
    let arch = if cfg!(target_arch = "wasm32") {
        "wasm"
    } else {
        "native"
    };
    let batch = synthetic_completions(N, 300, 8);
    let math = MathAccuracy::new("format = \"r1\"\n").unwrap_or_else(|e| panic!("{e}"));
    let format = FormatRule::new("mode = \"r1\"\n").unwrap_or_else(|e| panic!("{e}"));
    // Warm-up (page faults, allocator growth).
    let mean: f64 = score_all(&math, &batch)
        .iter()
        .map(|s| s.as_ref().map_or(f64::NAN, |s| s.total))
        .sum::<f64>()
        / N as f64;

    let line = |what: &str, ns: f64| println!("{arch:>6}: {what:<34} {ns:7.0} ns");
    println!(
        "{arch:>6}: {N} completions of 300 characters, one thread, fastest of {ROUNDS} rounds"
    );
    line(
        "math + r1 format rule / completion",
        per_item(|| score_all(&math, black_box(&batch)).len()),
    );
    line(
        "r1 format rule alone / completion",
        per_item(|| score_all(&format, black_box(&batch)).len()),
    );
    let order = [Extractor::Boxed, Extractor::AnswerTag];
    line(
        "  answer extraction / completion",
        per_item(|| {
            let found = batch
                .iter()
                .filter_map(|c| extract_answer(black_box(&c.response), &order));
            black_box(found.count());
            batch.len()
        }),
    );
    line(
        "  r1 format check / completion",
        per_item(|| {
            black_box(
                batch
                    .iter()
                    .filter(|c| is_r1_format(black_box(&c.response)))
                    .count(),
            );
            batch.len()
        }),
    );
    // The pairs the rule compares: the extracted answer against the reference.
    let pairs: Vec<(&str, &str)> = batch
        .iter()
        .map(|c| {
            let given = extract_answer(&c.response, &order).unwrap_or("");
            (given, c.sample.answer.as_deref().unwrap_or(""))
        })
        .collect();
    line(
        "  equivalence test / completion",
        per_item(|| {
            black_box(
                pairs
                    .iter()
                    .filter(|(p, r)| equivalent(black_box(p), r))
                    .count(),
            );
            pairs.len()
        }),
    );
    line(
        "lift: owned copy, sample each",
        per_item(|| black_box(batch.to_vec()).len()),
    );
    line(
        "lift: owned copy, sample per 8",
        per_item(|| {
            let samples: Vec<_> = batch.iter().step_by(8).map(|c| c.sample.clone()).collect();
            let responses: Vec<String> = batch.iter().map(|c| c.response.clone()).collect();
            black_box(&samples);
            black_box(responses).len()
        }),
    );
    println!("{arch:>6}: mean total {mean:.4}");
}
