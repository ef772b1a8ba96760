//! The policy-gradient losses, one file each in verl's `core_algos` style
//! (PPO's clipped surrogate, GSPO, CISPO), and the aggregation over tokens
//! and sequences (the KL term is in `rl::kl`).
//!
//! Every tensor here is `[B, T]` over response tokens (B sequences, T the
//! longest response), with a 0/1 float `mask` marking real tokens.
//! Aggregation divides by normalisers of the WHOLE batch, so that summing the
//! losses of micro-batches gives exactly the full-batch loss (and gradients).

mod cispo;
mod gspo;
mod ppo_clip;

use serde::Deserialize;
use tch::{Kind, Tensor};

pub use cispo::cispo_loss;
pub use gspo::gspo_loss;
pub use ppo_clip::ppo_clip_loss;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAggregation {
    /// Mean over every response token of the batch.
    TokenMean,
    /// Mean over sequences of each sequence's token mean.
    SeqMeanTokenMean,
    /// Dr. GRPO: each sequence's token sum divided by a constant length, mean over sequences.
    SeqSumConstant,
}

/// Clipping settings of the surrogate objective.
#[derive(Debug, Clone, Copy)]
pub struct ClipConfig {
    pub low: f64,
    pub high: f64,
    /// Dual clip constant `c` (> 1) bounding the loss of negative advantages
    /// (PPO's clip only).
    pub dual: Option<f64>,
}

/// `grpo.policy_loss`: the per-token policy-gradient term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyLoss {
    /// PPO's clipped surrogate per token (GRPO, DAPO, Dr. GRPO).
    #[default]
    PpoClip,
    /// GSPO: one clipped ratio per sequence; always averaged per sequence.
    Gspo,
    /// CISPO: REINFORCE weighted by the clipped, stop-gradient token ratio.
    Cispo,
}

impl PolicyLoss {
    /// The aggregation the loss is defined with: GSPO's is the mean over
    /// sequences (verl forces it too); the others use the configured one.
    pub fn aggregation(self, configured: LossAggregation) -> LossAggregation {
        match self {
            PolicyLoss::Gspo => LossAggregation::SeqMeanTokenMean,
            PolicyLoss::PpoClip | PolicyLoss::Cispo => configured,
        }
    }
}

/// Per-token policy loss `[B, T]` and a 0/1 float tensor of where the clip
/// was active. `advantages` is `[B, T]` or `[B, 1]`; `mask` marks real tokens.
pub fn policy_loss(
    kind: PolicyLoss,
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: ClipConfig,
) -> (Tensor, Tensor) {
    match kind {
        PolicyLoss::PpoClip => ppo_clip_loss(logp, old_logp, advantages, clip),
        PolicyLoss::Gspo => gspo_loss(logp, old_logp, advantages, mask, clip),
        PolicyLoss::Cispo => cispo_loss(logp, old_logp, advantages, clip),
    }
}

/// Sizes of the whole batch that the aggregation divides by.
#[derive(Debug, Clone, Copy)]
pub struct BatchNorm {
    /// Response tokens in the whole batch.
    pub tokens: f64,
    /// Sequences in the whole batch.
    pub sequences: f64,
    /// Dr. GRPO's constant length.
    pub constant_length: f64,
}

/// Reduces a `[B, T]` per-token quantity to a scalar.
pub fn aggregate(values: &Tensor, mask: &Tensor, mode: LossAggregation, norm: BatchNorm) -> Tensor {
    let masked = values * mask;
    match mode {
        LossAggregation::TokenMean => masked.sum(Kind::Float) / norm.tokens.max(1.0),
        LossAggregation::SeqMeanTokenMean => {
            let per_seq = masked.sum_dim_intlist(-1, false, Kind::Float)
                / mask.sum_dim_intlist(-1, false, Kind::Float).clamp_min(1.0);
            per_seq.sum(Kind::Float) / norm.sequences.max(1.0)
        }
        LossAggregation::SeqSumConstant => {
            masked.sum(Kind::Float) / (norm.constant_length * norm.sequences).max(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_tensors::t2;

    /// The normalisers of a batch that is all of `mask`.
    fn norm_of(mask: &Tensor, constant_length: usize) -> BatchNorm {
        BatchNorm {
            tokens: mask.sum(Kind::Double).double_value(&[]),
            sequences: mask.size()[0] as f64,
            constant_length: constant_length as f64,
        }
    }

    #[test]
    fn aggregation_modes_by_hand() {
        let v = t2(&[&[1.0, 2.0, 3.0], &[4.0, 0.0, 0.0]]);
        let m = t2(&[&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0]]);
        let norm = norm_of(&m, 4);
        // token-mean: (1+2+3+4)/4 = 2.5; seq-mean-token-mean: (2 + 4)/2 = 3; constant: 10/(4*2) = 1.25.
        let agg = |mode| aggregate(&v, &m, mode, norm).double_value(&[]);
        assert!((agg(LossAggregation::TokenMean) - 2.5).abs() < 1e-6);
        assert!((agg(LossAggregation::SeqMeanTokenMean) - 3.0).abs() < 1e-6);
        assert!((agg(LossAggregation::SeqSumConstant) - 1.25).abs() < 1e-6);
    }

    #[test]
    fn micro_batches_sum_to_the_full_batch() {
        let (v, m) = lmmhost_model::checkpoint::seeded(0, || {
            let v = Tensor::randn([6, 5], (Kind::Float, tch::Device::Cpu));
            let m = Tensor::rand([6, 5], (Kind::Float, tch::Device::Cpu))
                .gt(0.3)
                .to_kind(Kind::Float);
            (v, m)
        });
        let norm = norm_of(&m, 5);
        for mode in [
            LossAggregation::TokenMean,
            LossAggregation::SeqMeanTokenMean,
            LossAggregation::SeqSumConstant,
        ] {
            let full = aggregate(&v, &m, mode, norm).double_value(&[]);
            let parts: f64 = (0..3)
                .map(|i| {
                    aggregate(&v.narrow(0, 2 * i, 2), &m.narrow(0, 2 * i, 2), mode, norm)
                        .double_value(&[])
                })
                .sum();
            assert!((full - parts).abs() < 1e-5, "{mode:?}: {full} vs {parts}");
        }
    }
}
