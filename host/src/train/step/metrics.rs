//! The metrics of a step as typed records, written out under the names that
//! metrics.jsonl, TensorBoard and the plots use (`values`). Each name is
//! spelled here and nowhere else in the trainer.

use std::collections::BTreeMap;

use super::collect::Collected;
use super::plan::StepPlan;
use super::select::{PadStats, Selection};
use super::update::UpdateStats;
use crate::rl::kl::KlUse;

/// An SFT step.
#[derive(Debug, Clone, PartialEq)]
pub struct SftMetrics {
    /// Mean negative log-likelihood per assistant token.
    pub loss: f64,
    pub tokens: usize,
    /// Conversations over `sft.max_tokens`, left out.
    pub skipped_long: usize,
    pub grad_norm: f64,
    pub lr: f64,
    /// Conversations left out as bad under the loader's `on_error = "zero"`.
    pub dropped: usize,
    /// Seconds of the update; the step is the update.
    pub time_update: f64,
}

impl SftMetrics {
    pub fn values(&self) -> BTreeMap<String, f64> {
        let mut v = Values::default();
        v.put("sft/loss", self.loss);
        v.put("sft/tokens", self.tokens as f64);
        v.put("sft/skipped_long", self.skipped_long as f64);
        v.put("samples/dropped", self.dropped as f64);
        v.put("grad_norm", self.grad_norm);
        v.put("lr", self.lr);
        v.put("time/update", self.time_update);
        v.put("time/step", self.time_update);
        v.put(
            "throughput/tokens_per_s",
            self.tokens as f64 / self.time_update.max(1e-9),
        );
        v.0
    }
}

/// The rewards of every completion generated in the step, kept or not.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardStats {
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Each component's mean over the completions that reported it.
    pub components: BTreeMap<String, f64>,
    /// Completions a reward plugin failed on.
    pub failures: usize,
}

/// Completion counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleCounts {
    pub generated: usize,
    /// Rows the update trained on.
    pub effective: usize,
    /// Rows of the batch whose advantage is zero (before PAD).
    pub zero_advantage: usize,
    pub skipped_long_prompts: usize,
    /// Samples left out as bad under the loader's `on_error = "zero"`.
    pub dropped: usize,
}

/// Seconds of each phase and of the whole step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoTimes {
    pub rollout: f64,
    pub reward: f64,
    pub logprobs: f64,
    pub update: f64,
    pub step: f64,
}

/// A GRPO step.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoMetrics {
    pub reward: RewardStats,
    /// Mean response tokens over every completion generated.
    pub response_length: f64,
    /// Mean prompt tokens over the batch's rows.
    pub prompt_length: f64,
    /// Share of the batch's rows that ended with a stop token.
    pub stopped_fraction: f64,
    /// Mean per-token KL to the reference: the update's when KL is in the
    /// loss, else the rollout's.
    pub kl: Option<f64>,
    /// `None` when selection left no row to train on.
    pub update: Option<UpdateStats>,
    pub lr: f64,
    pub entropy_coef: f64,
    pub samples: SampleCounts,
    pub pad: Option<PadStats>,
    /// Rounds of generation and groups kept, under dynamic sampling.
    pub dynamic: Option<(u32, usize)>,
    pub time: GrpoTimes,
    /// Response tokens generated per second of rollout.
    pub gen_tokens_per_s: f64,
    /// Prompt and response tokens of the batch per second of the step.
    pub tokens_per_s: f64,
}

impl GrpoMetrics {
    /// The record of a step from what its phases returned.
    pub fn new(
        p: &StepPlan,
        c: &Collected,
        rollout_kl: Option<f64>,
        advantages: &[f64],
        selected: &Selection,
        update: Option<UpdateStats>,
        time: GrpoTimes,
    ) -> GrpoMetrics {
        let g = &c.generated;
        let rows = &c.batch.rows;
        let (mean, std) = mean_std(&g.totals);
        let prompt_tokens: f64 = rows.iter().map(|r| r.prompt.len() as f64).sum();
        let response_tokens: f64 = rows.iter().map(|r| r.response.len() as f64).sum();
        let kl = match (p.kl, &update) {
            (KlUse::InLoss { .. }, Some(u)) => Some(u.kl),
            _ => rollout_kl.filter(|k| k.is_finite()),
        };
        GrpoMetrics {
            reward: RewardStats {
                mean,
                std,
                components: (g.components.iter())
                    .map(|(k, (sum, n))| (k.clone(), sum / *n as f64))
                    .collect(),
                failures: g.failures,
            },
            response_length: mean_std(&g.lengths).0,
            prompt_length: prompt_tokens / rows.len().max(1) as f64,
            // A rank can hold no row of the batch (its share left out).
            stopped_fraction: rows.iter().filter(|r| r.stopped).count() as f64
                / rows.len().max(1) as f64,
            kl,
            update,
            lr: p.lr(),
            entropy_coef: p.entropy_coef(),
            samples: SampleCounts {
                generated: g.rows,
                effective: selected.rows.len(),
                zero_advantage: advantages.iter().filter(|a| a.abs() < 1e-12).count(),
                skipped_long_prompts: g.skipped_long_prompts,
                dropped: g.dropped_samples,
            },
            pad: selected.pad,
            dynamic: p.dynamic_sampling.then_some((g.rounds, c.batch.groups)),
            time,
            gen_tokens_per_s: g.lengths.iter().sum::<f64>() / time.rollout.max(1e-9),
            tokens_per_s: (prompt_tokens + response_tokens) / time.step.max(1e-9),
        }
    }

    pub fn values(&self) -> BTreeMap<String, f64> {
        let mut v = Values::default();
        let r = &self.reward;
        v.put("reward/mean", r.mean);
        v.put("reward/std", r.std);
        v.put("reward", r.mean);
        for (k, mean) in &r.components {
            v.put(&format!("reward/{k}/mean"), *mean);
        }
        if let Some(a) = r.components.get("accuracy") {
            v.put("accuracy", *a);
        }
        v.put("reward/failures", r.failures as f64);
        v.put("response_length/mean", self.response_length);
        v.put("prompt_length/mean", self.prompt_length);
        v.put("response/stopped_fraction", self.stopped_fraction);
        if let Some(kl) = self.kl {
            v.put("kl", kl);
        }
        if let Some(u) = &self.update {
            v.put("entropy", u.entropy);
            v.put("clip_fraction", u.clip_fraction);
            v.put("grad_norm", u.grad_norm);
            v.put("loss", u.loss);
            v.put("time/forward", u.time_forward);
            v.put("time/backward", u.time_backward);
            v.put("time/optimizer", u.time_optimizer);
        }
        v.put("lr", self.lr);
        v.put("entropy_coef", self.entropy_coef);
        let n = &self.samples;
        v.put("samples/generated", n.generated as f64);
        v.put("samples/effective", n.effective as f64);
        v.put("samples/zero_advantage", n.zero_advantage as f64);
        v.put(
            "samples/skipped_long_prompts",
            n.skipped_long_prompts as f64,
        );
        v.put("samples/dropped", n.dropped as f64);
        if let Some(pad) = self.pad {
            v.put("pad/eligible", pad.eligible as f64);
            v.put("pad/tau", pad.tau);
        }
        if let Some((rounds, groups)) = self.dynamic {
            v.put("dynamic/rounds", f64::from(rounds));
            v.put("dynamic/groups", groups as f64);
        }
        let t = &self.time;
        v.put("time/rollout", t.rollout);
        v.put("time/reward", t.reward);
        v.put("time/logprobs", t.logprobs);
        v.put("time/update", t.update);
        v.put("time/step", t.step);
        v.put("throughput/gen_tokens_per_s", self.gen_tokens_per_s);
        v.put("throughput/tokens_per_s", self.tokens_per_s);
        v.0
    }
}

/// Metric name -> value.
#[derive(Default)]
struct Values(BTreeMap<String, f64>);

impl Values {
    fn put(&mut self, name: &str, value: f64) {
        self.0.insert(name.to_string(), value);
    }
}

/// Mean and (population) standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// How one metric of the ranks' shares of a step makes the whole step's.
enum Across {
    /// Counts, and rates of the ranks working side by side.
    Sum,
    /// Times: the step waits for the slowest rank.
    Max,
    /// Shares where the worst rank tells what the step got.
    Min,
    /// Already reduced in the update (the same on every rank): rank 0's.
    Same,
    /// A mean over items, weighted by each rank's count of them.
    MeanBy(&'static str),
    /// A population standard deviation, from the ranks' means and counts.
    PooledStd {
        mean: &'static str,
        count: &'static str,
    },
}

fn across(name: &str) -> Across {
    match name {
        "samples/generated"
        | "samples/effective"
        | "samples/zero_advantage"
        | "samples/skipped_long_prompts"
        | "samples/dropped"
        | "reward/failures"
        | "sft/skipped_long"
        | "dynamic/groups" => Across::Sum,
        "loss" | "grad_norm" | "lr" | "entropy_coef" | "entropy" | "clip_fraction" | "sft/loss"
        | "sft/tokens" | "pad/tau" | "pad/eligible" => Across::Same,
        "reward/std" => Across::PooledStd {
            mean: "reward/mean",
            count: "samples/generated",
        },
        "prompt_length/mean" | "response/stopped_fraction" | "kl" => {
            Across::MeanBy("samples/effective")
        }
        "dynamic/rounds" => Across::Max,
        // The rank whose backward reached fewest buckets in time.
        "dist/overlap" => Across::Min,
        n if n.starts_with("time/") || n.starts_with("memory/") => Across::Max,
        // Every rank's collectives carry the same payload.
        n if n.starts_with("dist/") => Across::Max,
        n if n.starts_with("throughput/") => Across::Sum,
        // Rewards and lengths: means over the completions generated.
        _ => Across::MeanBy("samples/generated"),
    }
}

/// The step's metrics from each rank's metrics of its share (rank order).
/// Every mean is weighted by the items it is over, so that 2 ranks with half
/// the prompts each log what 1 rank with all of them would.
pub fn combine_ranks(parts: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    if let [one] = parts {
        return one.clone();
    }
    let names: std::collections::BTreeSet<&String> = parts.iter().flat_map(|p| p.keys()).collect();
    let weight = |p: &BTreeMap<String, f64>, count: &str| p.get(count).copied().unwrap_or(1.0);
    let mut out = BTreeMap::new();
    for name in names {
        let have: Vec<(&BTreeMap<String, f64>, f64)> = parts
            .iter()
            .filter_map(|p| p.get(name.as_str()).map(|v| (p, *v)))
            .collect();
        let value = match across(name) {
            Across::Sum => have.iter().map(|h| h.1).sum(),
            Across::Max => have.iter().map(|h| h.1).fold(f64::MIN, f64::max),
            Across::Min => have.iter().map(|h| h.1).fold(f64::MAX, f64::min),
            Across::Same => have[0].1,
            Across::MeanBy(count) => {
                let w: f64 = have.iter().map(|(p, _)| weight(p, count)).sum();
                let s: f64 = have.iter().map(|(p, v)| weight(p, count) * v).sum();
                if w > 0.0 {
                    s / w
                } else {
                    have[0].1
                }
            }
            Across::PooledStd { mean, count } => {
                // E[x^2] of each share is std^2 + mean^2.
                let (mut w, mut m, mut sq) = (0.0, 0.0, 0.0);
                for (p, std) in &have {
                    let (n, mu) = (weight(p, count), p.get(mean).copied().unwrap_or(0.0));
                    w += n;
                    m += n * mu;
                    sq += n * (std * std + mu * mu);
                }
                let w = w.max(1e-300);
                (sq / w - (m / w).powi(2)).max(0.0).sqrt()
            }
        };
        out.insert(name.clone(), value);
    }
    out
}
