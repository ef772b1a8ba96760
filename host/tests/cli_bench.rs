//! `lmmhost bench model` and `lmmhost bench grpo` with any model config and
//! lengths: the printed figures are there and parse, the JSON agrees with
//! them, and the lengths asked for are the lengths run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number after `label` on its line, e.g. `prefill  1234 tokens/s`.
fn figure(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in\n{stdout}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn bench_model_takes_a_configs_models_name_and_prints_peak_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.json");
    let stdout = run(&[
        "bench",
        "model",
        "--config",
        "tiny-qwen3-vl",
        "--batch",
        "2",
        "--prompt-len",
        "12",
        "--new-tokens",
        "3",
        "--reps",
        "1",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("Qwen3VLForConditionalGeneration"),
        "{stdout}"
    );
    for label in ["prefill", "decode", "forward+back"] {
        assert!(figure(&stdout, label) > 0.0, "{label}: {stdout}");
    }
    let peak = figure(&stdout, "peak memory");
    assert!(peak > 10.0, "{stdout}");
    assert!(stdout.contains("(peak RSS)"), "{stdout}");
    let v = json(&out);
    assert_eq!(v["peak_memory_kind"], "peak RSS");
    assert!(
        (v["peak_memory_mb"].as_f64().unwrap() - peak).abs() <= 1.0,
        "{v}"
    );
    assert_eq!(v["batch"], 2);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_grpo_runs_any_config_at_the_lengths_and_budget_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grpo.json");
    let run_dir = dir.path().join("bench-grpo-custom");
    let config = repo().join("configs/models/tiny-qwen2.5-vl/config.json");
    let stdout = run(&[
        "bench",
        "grpo",
        "--model",
        config.to_str().unwrap(),
        "--prompts",
        "2",
        "--group-size",
        "2",
        "--prompt-tokens",
        "100",
        "--response-tokens",
        "5",
        "--kv-budget",
        "120",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--set",
        &format!("output_dir={:?}", run_dir.to_str().unwrap()),
        "--json",
        out.to_str().unwrap(),
    ]);
    // A vision-language config picks the W2 workload (one image per prompt).
    assert!(stdout.contains("workload w2 with model"), "{stdout}");
    assert!(stdout.contains("vocab 1024"), "{stdout}");
    assert!(
        stdout.contains("2 prompts x 2 samples, prompt 100 tokens, response 5 tokens"),
        "{stdout}"
    );
    assert!(stdout.contains("KV budget 120 tokens"), "{stdout}");
    let step = figure(&stdout, "step");
    let parts: f64 = [
        "rollout",
        "reward",
        "ref/old logprobs",
        "forward",
        "backward",
        "optimizer",
    ]
    .iter()
    .map(|l| figure(&stdout, l))
    .sum();
    assert!(step > 0.0 && parts <= step * 1.01, "{stdout}");
    assert!(
        figure(&stdout, "generated tokens/s (rollout)") > 0.0,
        "{stdout}"
    );
    let peak = figure(&stdout, "peak memory (peak RSS)");
    assert!(peak > 10.0, "{stdout}");
    let v = json(&out);
    assert_eq!(v["prompt_length/mean"], 100.0);
    assert_eq!(v["response_length/mean"], 5.0);
    assert_eq!(v["kv_cache_budget"], 120);
    assert_eq!(v["group_size"], 2);
    assert!(
        (v["peak_memory_mb"].as_f64().unwrap() - peak).abs() <= 1.0,
        "{v}"
    );
    // Benchmarks write no checkpoint or final model.
    assert!(run_dir.join("metrics.jsonl").is_file());
    assert!(!run_dir.join("final-model").exists());
    let saved = std::fs::read_dir(run_dir.join("checkpoints")).map_or(0, |d| d.count());
    assert_eq!(saved, 0);
}
