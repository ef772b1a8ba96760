//! What the run survived under `on_error = "zero"`: reward items scored 0
//! and dataset samples left out of a step. Every one is a line of
//! `failures.jsonl` in the run directory (step, plugin, sample, reason); the
//! first few of a step are also printed above the progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::Serialize;

use super::plugins::CombinedScore;
use super::progress::say;

/// Failures of one step printed in full; the rest are counted.
const SHOWN_PER_STEP: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub step: u64,
    /// `reward` (an item scored 0) or `sample` (a sample left out).
    pub kind: &'static str,
    /// The reward plugin, or the dataset.
    pub source: String,
    /// The sample's id (`file:line` for the core loaders; empty when the
    /// loader gave none).
    pub sample: String,
    pub error: String,
}

pub struct FailureLog {
    path: PathBuf,
    /// Failures logged by this process.
    pub total: usize,
}

impl FailureLog {
    /// `rank`: a data-parallel rank other than 0 logs the failures of its
    /// own share of the step to a file of its own.
    pub fn new(run_dir: &Path, rank: usize) -> FailureLog {
        let name = if rank == 0 {
            "failures.jsonl".to_string()
        } else {
            format!("failures.rank{rank}.jsonl")
        };
        FailureLog {
            path: run_dir.join(name),
            total: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `failures` to the file and prints the first few.
    pub fn report(&mut self, bar: &ProgressBar, failures: &[Failure]) -> Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for f in failures {
            text.push_str(&serde_json::to_string(f)?);
            text.push('\n');
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        for f in failures.iter().take(SHOWN_PER_STEP) {
            let what = match f.kind {
                "reward" if f.sample.is_empty() => {
                    format!("reward plugin {} scored a sample without id 0", f.source)
                }
                "reward" => format!("reward plugin {} scored sample {} 0", f.source, f.sample),
                _ => format!("dataset {}: {} left out", f.source, f.sample),
            };
            say(bar, format!("step {}: {what}: {}", f.step, f.error));
        }
        if failures.len() > SHOWN_PER_STEP {
            say(
                bar,
                format!(
                    "step {}: {} more failures, all in {}",
                    failures[0].step,
                    failures.len() - SHOWN_PER_STEP,
                    self.path.display()
                ),
            );
        }
        self.total += failures.len();
        Ok(())
    }
}

/// The reward failures of scored completions; `sample(i)` names the sample
/// completion `i` answers.
pub fn reward_failures(
    step: u64,
    scores: &[CombinedScore],
    sample: impl Fn(usize) -> String,
) -> Vec<Failure> {
    let mut out = Vec::new();
    for (i, sc) in scores.iter().enumerate() {
        for f in &sc.failures {
            // CombinedScore names the plugin first: "<plugin>: <error>".
            let (plugin, error) = f.split_once(": ").unwrap_or(("", f.as_str()));
            out.push(Failure {
                step,
                kind: "reward",
                source: plugin.to_string(),
                sample: sample(i),
                error: error.to_string(),
            });
        }
    }
    out
}
