//! The reward benchmark as a test (ignored by default: it measures, it does
//! not check behaviour). Same code path as `lmmhost bench reward`.
//! Run: `cargo test --release -p lmmhost-tests --test bench_reward -- --ignored --nocapture`
//! (`LMMHOST_BENCH_N` sets the number of completions, default 20000;
//! `LMMHOST_BENCH_GROUP` the responses per sample, default 8;
//! `LMMHOST_BENCH_BATCH` the completions per call, default 4096;
//! `LMMHOST_BENCH_THREADS` the threads and instances, default 2;
//! `LMMHOST_BENCH_ROUNDS` the alternating timed rounds, default 3).
//!
//! The figures docs/performance.md reports come from the CLI, which keeps
//! freed memory in the process (`memory_policy` in host/src/main.rs). This
//! test runs with glibc's defaults, so its native path may pay page faults
//! (printed per round by the CLI) that the sandbox does not; for the CLI's
//! settings run it with
//! `GLIBC_TUNABLES=glibc.malloc.trim_threshold=4294967295:glibc.malloc.mmap_threshold=33554432`.

use lmmhost_plugin_host::bench::BenchSize;
use lmmhost_plugin_host::PluginSpec;
use lmmhost_sdk::Reward;
use lmmhost_tests::plugin_wasm;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn run<R: Reward + Sync>(plugin: &str, config: &str) {
    let size = BenchSize {
        completions: env_usize("LMMHOST_BENCH_N", 20_000),
        chars: 300,
        group: env_usize("LMMHOST_BENCH_GROUP", 8),
        batch: env_usize("LMMHOST_BENCH_BATCH", 4096),
        threads: env_usize("LMMHOST_BENCH_THREADS", 2),
        rounds: env_usize("LMMHOST_BENCH_ROUNDS", 3),
    };
    let native = R::new(config).unwrap();
    let spec = PluginSpec::from_file(plugin, &plugin_wasm(plugin), config).unwrap();
    let r = lmmhost_plugin_host::bench::bench_reward(spec, &native, size).unwrap();
    println!(
        "{plugin}: n={} threads={} compile={:.1}ms instantiate={:.1}ms wasm={:.0}/s native={:.0}/s ratio={:.2} mean_total={:.4}",
        r.completions,
        r.threads,
        r.compile.as_secs_f64() * 1e3,
        r.instantiate.as_secs_f64() * 1e3,
        r.wasm_per_sec,
        r.native_per_sec,
        r.wasm_per_sec / r.native_per_sec,
        r.mean_total
    );
    if let (Some(w), Some(n)) = (r.wasm_per_cpu_sec, r.native_per_cpu_sec) {
        println!(
            "{plugin}: per CPU second: wasm={w:.0}/s native={n:.0}/s ratio={:.2}",
            w / n
        );
    }
    assert_eq!(r.rounds.len(), size.rounds.max(1));
    assert!(r.wasm_per_sec > 0.0 && r.native_per_sec > 0.0);
}

#[test]
#[ignore]
fn bench_reward_math_wasm_vs_native() {
    run::<lmmhost_sdk::rules::math::MathAccuracy>("reward-math", "format = \"r1\"\n");
}

/// The format rule does almost no work: its Wasm/native gap is the cost of
/// the boundary (copying completions in, scores out) and the instance pool.
#[test]
#[ignore]
fn bench_reward_format_wasm_vs_native() {
    run::<lmmhost_sdk::rules::format::FormatRule>("reward-format", "");
}
