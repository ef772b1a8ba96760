//! The schedule itself: which stage runs, when to move on, and its
//! checkpointable state.

use crate::config::{Length, ScheduleConfig, StageConfig};
use lmmhost_sdk::{Plan, Schedule, StageKind, TrainState};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Metric the trainer reports with each dataset's size (`dataset/<name>/len`).
pub fn dataset_len_metric(name: &str) -> String {
    format!("dataset/{name}/len")
}

/// Metric the trainer reports with the prompts per step.
pub const BATCH_PROMPTS_METRIC: &str = "batch/prompts";

/// Metric the trainer reports with `sft.batch_size`, when the file sets it
/// (an SFT step takes that many samples, else the prompts per step).
pub const SFT_BATCH_METRIC: &str = "batch/sft_samples";

/// The experiment key every plan sets to its stage's length in steps (the
/// cap when `advance_when` may end it sooner).
pub const STAGE_STEPS_KEY: &str = "optim.stage_steps";

pub struct Staged {
    config: ScheduleConfig,
    cursor: Cursor,
}

/// Everything that changes while training; saved with checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// Index of the current stage; `== stages.len()` once finished.
    stage: usize,
    /// Name of that stage, to catch a checkpoint restored under another config.
    stage_name: String,
    /// Steps done in the current stage.
    done: u64,
    /// The stage's length in steps, once known (epochs resolve at stage start).
    cap: Option<u64>,
    /// The advance metric over the stage's last `over_last` steps, oldest first.
    window: VecDeque<f64>,
}

impl Staged {
    fn stage(&self) -> Option<&StageConfig> {
        self.config.stages.get(self.cursor.stage)
    }

    fn label(&self) -> String {
        match self.stage() {
            Some(s) => format!("stage {} (\"{}\")", self.cursor.stage, s.name),
            None => "the finished schedule".into(),
        }
    }

    fn enter(&mut self, index: usize) {
        self.cursor = Cursor {
            stage: index,
            stage_name: self
                .config
                .stages
                .get(index)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            done: 0,
            cap: None,
            window: VecDeque::new(),
        };
    }

    /// Takes in the step the trainer just finished (if it belongs to us).
    fn record(&mut self, state: &TrainState) -> Result<(), String> {
        if state.stage.is_empty() {
            return Ok(());
        }
        let Some(stage) = self.stage() else {
            return Ok(());
        };
        if state.stage != stage.name {
            // Asked again right after moving on, before a step of the new stage ran.
            let earlier = self.config.stages[..self.cursor.stage]
                .iter()
                .any(|s| s.name == state.stage);
            if earlier && self.cursor.done == 0 {
                return Ok(());
            }
            return Err(format!(
                "schedule-staged: the trainer reports stage \"{}\" but the schedule is at {}; restore the schedule's saved state together with the checkpoint",
                state.stage,
                self.label()
            ));
        }
        // Only a new step counts, so asking twice for the same state is harmless.
        if state.stage_step <= self.cursor.done {
            return Ok(());
        }
        if let Some(cond) = &stage.advance_when {
            let value = state
                .metrics
                .iter()
                .find(|(k, _)| *k == cond.metric)
                .map(|(_, v)| *v);
            let Some(value) = value else {
                // Reported before in this stage (this step just lacks it), or
                // an eval metric, which only eval steps report.
                if !self.cursor.window.is_empty()
                    || state.metrics.is_empty()
                    || cond.metric.starts_with("eval/")
                {
                    self.cursor.done = state.stage_step;
                    return Ok(());
                }
                // A metric the trainer does not report can never advance the stage.
                let mut names: Vec<&str> = state.metrics.iter().map(|(k, _)| k.as_str()).collect();
                names.sort_unstable();
                return Err(format!(
                    "{}: advance_when.metric `{}` is not among the metrics the trainer reports, so the stage could never advance early; it reports: {}",
                    self.label(),
                    cond.metric,
                    names.join(", ")
                ));
            };
            if value.is_finite() {
                let keep = cond.over_last;
                self.cursor.window.push_back(value);
                while self.cursor.window.len() > keep {
                    self.cursor.window.pop_front();
                }
            }
        }
        self.cursor.done = state.stage_step;
        Ok(())
    }

    /// The stage's length in steps: `steps`, or
    /// `ceil(epochs * sum of the stage's dataset sizes / samples per step)`,
    /// samples per step being what a step of the stage's kind takes.
    fn resolve_cap(&self, stage: &StageConfig, state: &TrainState) -> Result<u64, String> {
        let epochs = match stage.length {
            Length::Steps(n) => return Ok(n),
            Length::Epochs(e) => e,
        };
        let metric = |name: &str| {
            state
                .metrics
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
        };
        let mut total = 0f64;
        for (ds, w) in &stage.datasets {
            if *w == 0.0 {
                continue;
            }
            let len = match stage.dataset_sizes.get(ds) {
                Some(n) => *n as f64,
                None => metric(&dataset_len_metric(ds)).ok_or_else(|| {
                    format!(
                        "{}: `epochs` needs the size of dataset \"{ds}\": the trainer did not report metric `{}` and `dataset_sizes.{ds}` is not set",
                        self.label(),
                        dataset_len_metric(ds)
                    )
                })?,
            };
            total += len;
        }
        let batch = match stage.samples_per_step {
            Some(n) => n as f64,
            None => step_samples(stage, metric).ok_or_else(|| {
                format!(
                    "{}: `epochs` needs the samples per step: the trainer did not report metric `{BATCH_PROMPTS_METRIC}` and `samples_per_step` is not set",
                    self.label()
                )
            })??,
        };
        if !(batch.is_finite() && batch >= 1.0 && total.is_finite() && total >= 0.0) {
            return Err(format!(
                "{}: cannot turn epochs into steps from {total} samples and {batch} prompts per step",
                self.label()
            ));
        }
        // At least one step, so a tiny dataset still trains.
        Ok(((epochs * total / batch).ceil() as u64).max(1))
    }

    fn should_advance(&self, stage: &StageConfig) -> bool {
        if self.cursor.cap.is_some_and(|cap| self.cursor.done >= cap) {
            return true;
        }
        match &stage.advance_when {
            Some(cond) if self.cursor.window.len() >= cond.over_last => {
                let w = &self.cursor.window;
                let mean = w.iter().sum::<f64>() / w.len() as f64;
                cond.satisfied_by(mean)
            }
            _ => false,
        }
    }
}

impl Schedule for Staged {
    fn new(config: &str) -> Result<Self, String> {
        let config = ScheduleConfig::parse(config)?;
        let mut s = Staged {
            config,
            cursor: Cursor {
                stage: 0,
                stage_name: String::new(),
                done: 0,
                cap: None,
                window: VecDeque::new(),
            },
        };
        s.enter(0);
        Ok(s)
    }

    fn next_plan(&mut self, state: &TrainState) -> Result<Option<Plan>, String> {
        self.record(state)?;
        loop {
            let Some(stage) = self.stage().cloned() else {
                return Ok(None);
            };
            if self.cursor.cap.is_none() {
                self.cursor.cap = Some(self.resolve_cap(&stage, state)?);
            }
            if !self.should_advance(&stage) {
                let mut overrides = stage.overrides.clone();
                // The stage's length, which the trainer lays warmup ratios,
                // learning-rate decays and PAD's temperature over (unless
                // the config sets the key itself).
                if let Some(cap) = self.cursor.cap {
                    if !overrides.extra.iter().any(|(k, _)| k == STAGE_STEPS_KEY) {
                        overrides
                            .extra
                            .push((STAGE_STEPS_KEY.to_owned(), cap.to_string()));
                    }
                }
                return Ok(Some(Plan {
                    stage: stage.name.clone(),
                    kind: stage.kind,
                    datasets: stage.datasets.clone(),
                    overrides,
                }));
            }
            lmmhost_sdk::log::info(
                "schedule-staged: stage done",
                &[
                    ("stage", &stage.name),
                    ("steps", &self.cursor.done.to_string()),
                ],
            );
            self.enter(self.cursor.stage + 1);
        }
    }

    fn save_state(&self) -> Vec<u8> {
        // Serializing plain numbers and strings cannot fail.
        serde_json::to_vec(&self.cursor).unwrap_or_default()
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let c: Cursor = serde_json::from_slice(bytes)
            .map_err(|e| format!("schedule-staged: saved state is not valid: {e}"))?;
        let n = self.config.stages.len();
        let expected = self.config.stages.get(c.stage).map(|s| s.name.as_str());
        match expected {
            Some(name) if name == c.stage_name => {}
            None if c.stage == n && c.stage_name.is_empty() => {}
            Some(name) => {
                return Err(format!(
                    "schedule-staged: saved state is at stage {} (\"{}\") but this config's stage {} is \"{name}\"; the schedule changed since the checkpoint",
                    c.stage, c.stage_name, c.stage
                ))
            }
            None => {
                return Err(format!(
                    "schedule-staged: saved state is at stage {} but this config has {n} stages",
                    c.stage
                ))
            }
        }
        self.cursor = c;
        Ok(())
    }
}

/// The samples one step of `stage` takes, as the trainer sizes it: GRPO
/// `rollout.prompts_per_step`; SFT `sft.batch_size`, else
/// `rollout.prompts_per_step`; each the stage's override where it sets one,
/// else the file's value the trainer reports. `None`: not reported.
fn step_samples(
    stage: &StageConfig,
    metric: impl Fn(&str) -> Option<f64>,
) -> Option<Result<f64, String>> {
    let own = |key: &str| {
        stage
            .overrides
            .extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("overrides `{key}` = {v}: expected a number"))
            })
    };
    let prompts =
        || own("rollout.prompts_per_step").or_else(|| metric(BATCH_PROMPTS_METRIC).map(Ok));
    match stage.kind {
        StageKind::Sft => own("sft.batch_size")
            .or_else(|| metric(SFT_BATCH_METRIC).map(Ok))
            .or_else(prompts),
        StageKind::Grpo => prompts(),
    }
}
