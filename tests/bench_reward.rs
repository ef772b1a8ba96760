//! The reward benchmark as a test (ignored by default: it measures, it does
//! not check behaviour). Same code path as `lmmhost bench reward`.
//! Run: `cargo test --release -p lmmhost-tests --test bench_reward -- --ignored --nocapture`
//! (`LMMHOST_BENCH_N` sets the number of completions, default 20000).

use std::path::PathBuf;

use lmmhost_plugin_host::PluginSpec;
use lmmhost_sdk::Reward;

#[test]
#[ignore]
fn bench_reward_math_wasm_vs_native() {
    let dir = std::env::var_os("LMMHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join("reward-math.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    let n: usize = std::env::var("LMMHOST_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let config = "format = \"r1\"\n";
    let native = lmmhost_sdk::rules::math::MathAccuracy::new(config).unwrap();
    let spec = PluginSpec::from_file("reward-math", &path, config).unwrap();
    let r = lmmhost_plugin_host::bench::bench_reward(spec, &native, n, 300, 2).unwrap();
    println!(
        "n={} threads={} compile={:.1}ms instantiate={:.1}ms wasm={:.0}/s native={:.0}/s ratio={:.2} mean_total={:.4}",
        r.completions,
        r.threads,
        r.compile.as_secs_f64() * 1e3,
        r.instantiate.as_secs_f64() * 1e3,
        r.wasm_per_sec,
        r.native_per_sec,
        r.wasm_per_sec / r.native_per_sec,
        r.mean_total
    );
    assert!(r.wasm_per_sec > 0.0 && r.native_per_sec > 0.0);
}
