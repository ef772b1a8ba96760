//! GRPO's token-level terms: the clipped policy-gradient loss and the
//! aggregation over tokens and sequences (the KL term is in `rl::kl`).
//!
//! Every tensor here is `[B, T]` over response tokens (B sequences, T the
//! longest response), with a 0/1 float `mask` marking real tokens.
//! Aggregation divides by normalisers of the WHOLE batch, so that summing the
//! losses of micro-batches gives exactly the full-batch loss (and gradients).

use serde::Deserialize;
use tch::{Kind, Tensor};

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
    /// Dual clip constant `c` (> 1) bounding the loss of negative advantages.
    pub dual: Option<f64>,
}

/// Per-token policy loss `[B, T]` and a 0/1 float tensor of where the clip bound was active.
///
/// `L = max(-A * rho, -A * clip(rho, 1 - low, 1 + high))`, `rho = exp(logp - old_logp)`;
/// with dual clip, for `A < 0`: `L = min(L, -A * c)`.
pub fn clipped_policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    clip: ClipConfig,
) -> (Tensor, Tensor) {
    let adv = advantages.unsqueeze(-1);
    let ratio = (logp - old_logp).exp();
    let unclipped = -&adv * &ratio;
    let clipped = -&adv * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    let mut loss = unclipped.maximum(&clipped);
    let clip_active = clipped.gt_tensor(&unclipped).to_kind(Kind::Float);
    if let Some(c) = clip.dual {
        let bound = -&adv * c;
        loss = loss.where_self(&adv.ge(0.0), &loss.minimum(&bound));
    }
    (loss, clip_active)
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
    use crate::rl::test_tensors::{close, t2, vals};

    /// The normalisers of a batch that is all of `mask`.
    fn norm_of(mask: &Tensor, constant_length: usize) -> BatchNorm {
        BatchNorm {
            tokens: mask.sum(Kind::Double).double_value(&[]),
            sequences: mask.size()[0] as f64,
            constant_length: constant_length as f64,
        }
    }

    #[test]
    fn clipped_loss_by_hand() {
        // ratios exp(log 1.5) = 1.5, exp(log 0.5) = 0.5, 1.0; advantages +1 (row 0) and -1 (row 1).
        let logp = t2(&[
            &[1.5f64.ln(), 0.5f64.ln(), 0.0],
            &[1.5f64.ln(), 0.5f64.ln(), 0.0],
        ]);
        let old = Tensor::zeros_like(&logp);
        let adv = Tensor::from_slice(&[1.0f32, -1.0]);
        let clip = ClipConfig {
            low: 0.2,
            high: 0.28,
            dual: None,
        };
        let (loss, active) = clipped_policy_loss(&logp, &old, &adv, clip);
        // A = +1: max(-1.5, -1.28) = -1.28 (clipped); max(-0.5, -0.8) = -0.5; -1.
        // A = -1: max(1.5, 1.28) = 1.5; max(0.5, 0.8) = 0.8 (clipped); 1.
        close(&vals(&loss), &[-1.28, -0.5, -1.0, 1.5, 0.8, 1.0]);
        close(&vals(&active), &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn dual_clip_bounds_negative_advantages() {
        let logp = t2(&[&[5f64.ln(), 2f64.ln()]]);
        let old = Tensor::zeros_like(&logp);
        let clip = ClipConfig {
            low: 0.2,
            high: 0.2,
            dual: Some(3.0),
        };
        let (loss, _) = clipped_policy_loss(&logp, &old, &Tensor::from_slice(&[-1.0f32]), clip);
        // rho = 5: max(5, 1.2) = 5 -> min(5, 3) = 3; rho = 2: max(2, 1.2) = 2 -> stays 2.
        close(&vals(&loss), &[3.0, 2.0]);
        let (loss, _) = clipped_policy_loss(&logp, &old, &Tensor::from_slice(&[1.0f32]), clip);
        // Positive advantages are untouched by the dual clip: max(-5, -1.2) = -1.2.
        close(&vals(&loss), &[-1.2, -1.2]);
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
        tch::manual_seed(0);
        let v = Tensor::randn([6, 5], (Kind::Float, tch::Device::Cpu));
        let m = Tensor::rand([6, 5], (Kind::Float, tch::Device::Cpu))
            .gt(0.3)
            .to_kind(Kind::Float);
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
