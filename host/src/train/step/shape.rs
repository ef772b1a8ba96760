//! Shape rewards: each completion's total reward, less the KL penalty when
//! the plan puts it in the reward. The KL between the rollout's policy and
//! the reference is measured whenever both log-probs were computed.

use crate::rl::kl::{sequence_kl, KlUse};

use super::collect::Batch;

pub struct Shaped {
    /// One reward per row of the batch.
    pub totals: Vec<f64>,
    /// Mean per-token KL of the rollout's policy to the reference, when measured.
    pub kl: Option<f64>,
}

pub fn shape_rewards(batch: &Batch, kl: KlUse) -> Shaped {
    let mut totals: Vec<f64> = batch.scores.iter().map(|c| c.total).collect();
    let Some(estimator) = kl.estimator() else {
        return Shaped { totals, kl: None };
    };
    let (mut sum, mut tokens) = (0.0, 0usize);
    for (i, total) in totals.iter_mut().enumerate() {
        let old = batch.old_logprobs.get(i).map_or(&[][..], Vec::as_slice);
        if old.is_empty() {
            continue;
        }
        let seq = sequence_kl(old, &batch.ref_logprobs[i], estimator);
        sum += seq;
        tokens += old.len();
        if let KlUse::InReward { coef, .. } = kl {
            *total -= coef * seq;
        }
    }
    Shaped {
        totals,
        kl: (tokens > 0).then(|| sum / tokens as f64),
    }
}
