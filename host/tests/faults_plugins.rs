//! Hostile reward plugins during training: one that loops forever and one
//! that allocates 4 GiB, on every completion (`always = true`), under both
//! error policies. `abort` stops the run naming the plugin, the limit it hit
//! and the sample; `zero` goes on, scores the items 0, logs each failure to
//! `failures.jsonl` and counts them in the step's metrics.

mod cli_support;
mod faults_support;
mod train_support;

use std::path::{Path, PathBuf};

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::run;

use faults_support::{experiment, failures, opts, run_err};

const STEPS: u64 = 2;
/// Completions a step scores: 2 prompts of 4 responses.
const ITEMS: usize = 8;

/// The experiment with `plugin` as its only reward, under `on_error` and
/// `limits` (a TOML inline table's body).
fn hostile(dir: &Path, plugin: &str, on_error: &str, limits: &str) -> PathBuf {
    let extra = format!(
        "[plugins.hostile]\nwasm = \"{}\"\non_error = \"{on_error}\"\nconfig = {{ always = true }}\nlimits = {{ instances = 1, {limits} }}\n",
        cli_support::plugin(plugin).display()
    );
    let path = experiment(dir, STEPS, &extra);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[[rewards]]\nplugin = \"math\"\n",
            "[[rewards]]\nplugin = \"hostile\"\n",
        )
        .replace("prompts_per_step = 4", "prompts_per_step = 2");
    std::fs::write(&path, text).unwrap();
    path
}

/// Under `abort` the first failed item stops the run before any step is
/// recorded, naming the plugin, the limit and the sample (`file:line`).
fn assert_aborts(plugin: &str, limits: &str, limit_hit: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = hostile(dir.path(), plugin, "abort", limits);
    let msg = run_err(&Experiment::load(&path).unwrap());
    assert!(
        msg.contains("plugin hostile:")
            && msg.contains(limit_hit)
            && msg.contains("(sample id \"digits.jsonl:"),
        "{msg}"
    );
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap_or_default();
    assert!(metrics.is_empty(), "a step was recorded: {metrics}");
}

/// Under `zero` the run finishes; every item scores 0, is a line of
/// `failures.jsonl` (step, plugin, sample, reason) and is counted in
/// `reward/failures`.
fn assert_zeroed(plugin: &str, limits: &str, limit_hit: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = hostile(dir.path(), plugin, "zero", limits);
    let summary = run(&Experiment::load(&path).unwrap(), &opts(false, None)).unwrap();
    assert_eq!(summary.steps, STEPS);
    let logged = failures(&summary.output_dir);
    assert_eq!(logged.len(), ITEMS * STEPS as usize, "{logged:?}");
    for (i, f) in logged.iter().enumerate() {
        assert_eq!(f["step"], (i / ITEMS + 1) as u64, "{f}");
        assert_eq!(f["kind"], "reward", "{f}");
        assert_eq!(f["source"], "hostile", "{f}");
        assert!(
            f["sample"].as_str().unwrap().starts_with("digits.jsonl:"),
            "{f}"
        );
        assert!(f["error"].as_str().unwrap().contains(limit_hit), "{f}");
    }
    let text = std::fs::read_to_string(summary.output_dir.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), STEPS as usize);
    for r in &records {
        assert_eq!(r["values"]["reward/failures"], ITEMS as f64, "{r}");
        assert_eq!(r["values"]["reward/mean"], 0.0, "{r}");
    }
}

const LOOP_LIMITS: &str = "call_timeout_ms = 50";
const LOOP_HIT: &str = "timed out after 50 ms (limit call_timeout_ms)";
const ALLOC_LIMITS: &str = "memory_mb = 64";
const ALLOC_HIT: &str = "ran out of memory (limit memory_mb = 64)";

#[test]
fn a_looping_reward_stops_the_run_under_abort() {
    assert_aborts("hostile-loop", LOOP_LIMITS, LOOP_HIT);
}

#[test]
fn a_looping_reward_scores_zero_and_is_logged_under_zero() {
    assert_zeroed("hostile-loop", LOOP_LIMITS, LOOP_HIT);
}

#[test]
fn an_allocating_reward_stops_the_run_under_abort() {
    assert_aborts("hostile-alloc", ALLOC_LIMITS, ALLOC_HIT);
}

#[test]
fn an_allocating_reward_scores_zero_and_is_logged_under_zero() {
    assert_zeroed("hostile-alloc", ALLOC_LIMITS, ALLOC_HIT);
}
