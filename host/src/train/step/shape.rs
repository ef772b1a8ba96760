//! Shape rewards and advantages: each completion's total reward (less its
//! summed KL under `placement = "reward-sequence"`), the group advantages,
//! their clamp, the per-token KL penalty's returns to go (`placement =
//! "reward"`, OpenRLHF's order) and the whitening over the batch's tokens.
//! The KL between the rollout's policy and the reference is measured
//! whenever both log-probs were computed.

use anyhow::Result;

use super::collect::Batch;
use super::plan::StepPlan;
use crate::rl::advantage::{advantages, standardise_tokens, token_advantages, AdvantageEstimator};
use crate::rl::kl::{token_kl, KlUse};
use crate::train::data_parallel::DataParallel;

pub struct Shaped {
    /// One advantage per row (before the per-token KL and whitening): what
    /// the metrics count as zero.
    pub sequence: Vec<f64>,
    /// Per row, per response token: what the update trains on.
    pub tokens: Vec<Vec<f32>>,
    /// Mean per-token KL of the rollout's policy to the reference, when measured.
    pub kl: Option<f64>,
}

pub fn shape(
    dp: &DataParallel,
    batch: &Batch,
    p: &StepPlan,
    estimator: AdvantageEstimator,
) -> Result<Shaped> {
    let mut totals: Vec<f64> = batch.scores.iter().map(|c| c.total).collect();
    // The rollout policy's KL per token, where both passes ran.
    let per_token: Option<Vec<Vec<f64>>> = p.kl.estimator().and_then(|est| {
        (!batch.old_logprobs.is_empty()).then(|| {
            (batch.old_logprobs.iter().zip(&batch.ref_logprobs))
                .map(|(old, reference)| token_kl(old, reference, est))
                .collect()
        })
    });
    let kl = per_token.as_ref().and_then(|rows| {
        let n: usize = rows.iter().map(Vec::len).sum();
        (n > 0).then(|| rows.iter().flatten().sum::<f64>() / n as f64)
    });
    if let (KlUse::InRewardSequence { coef, .. }, Some(rows)) = (p.kl, &per_token) {
        for (total, kl) in totals.iter_mut().zip(rows) {
            *total -= coef * kl.iter().sum::<f64>();
        }
    }
    let mut sequence = advantages(&totals, p.group_size, estimator);
    if let Some([lo, hi]) = p.advantage_clip {
        sequence.iter_mut().for_each(|a| *a = a.clamp(lo, hi));
    }
    let lens: Vec<usize> = batch.rows.iter().map(|r| r.response.len()).collect();
    let penalty = match (p.kl, &per_token) {
        (KlUse::InReward { coef, .. }, Some(rows)) => Some((&rows[..], coef)),
        _ => None,
    };
    let mut tokens = token_advantages(&sequence, &lens, penalty);
    if p.whiten {
        whiten_across_ranks(dp, &mut tokens)?;
    }
    Ok(Shaped {
        sequence,
        tokens,
        kl,
    })
}

/// Whitening over the tokens of the whole batch, every rank's share of it:
/// the mean and then the variance are summed over ranks (`rl::advantage::
/// whiten_tokens` on one rank).
fn whiten_across_ranks(dp: &DataParallel, adv: &mut [Vec<f32>]) -> Result<()> {
    let tokens = || adv.iter().flatten().map(|&x| f64::from(x));
    let sums = dp.sum(&[tokens().count() as f64, tokens().sum()])?;
    if sums[0] == 0.0 {
        return Ok(());
    }
    let mean = sums[1] / sums[0];
    let squares = dp.sum(&[tokens().map(|x| (x - mean).powi(2)).sum()])?[0];
    standardise_tokens(adv, mean, squares / sums[0]);
    Ok(())
}
