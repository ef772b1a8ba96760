//! Select: the rows the update trains on. With PAD, a draw of the rows with
//! informative advantages (`rl::pad`) over the whole batch of all ranks;
//! otherwise every row of the batch.

use std::borrow::Cow;

use anyhow::Result;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::collect::Batch;
use crate::rl::advantage::sequence_means;
use crate::rl::pad::{self, PadConfig};
use crate::train::data_parallel::DataParallel;
use crate::train::rollout::Row;

/// PAD's draw, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadStats {
    /// Rows inside the thresholds before the draw (over all ranks).
    pub eligible: usize,
    /// The softmax temperature of the draw.
    pub tau: f64,
}

/// The update's rows, with their per-token advantages and log-probs (empty
/// where the batch has none).
pub struct Selection<'a> {
    pub rows: Cow<'a, [Row]>,
    pub advantages: Cow<'a, [Vec<f32>]>,
    pub old_logprobs: Cow<'a, [Vec<f32>]>,
    pub ref_logprobs: Cow<'a, [Vec<f32>]>,
    pub pad: Option<PadStats>,
}

/// `seed` fixes PAD's draw, `tau` (`None`: PAD is off) its temperature. PAD
/// ranks a completion by its mean token advantage (its advantage, unless the
/// KL is in the reward per token). With several ranks every rank draws from
/// the whole batch's advantages, in the batch's order (an all-reduce of each
/// rank's rows in their places), so that every rank draws what one process
/// would, and keeps the rows of its own share.
pub fn select<'a>(
    dp: &DataParallel,
    batch: &'a Batch,
    advantages: &'a [Vec<f32>],
    group_size: usize,
    pad: &PadConfig,
    seed: u64,
    tau: Option<f64>,
) -> Result<Selection<'a>> {
    let Some(tau) = tau else {
        return Ok(Selection {
            rows: Cow::Borrowed(&batch.rows),
            advantages: Cow::Borrowed(advantages),
            old_logprobs: Cow::Borrowed(&batch.old_logprobs),
            ref_logprobs: Cow::Borrowed(&batch.ref_logprobs),
            pad: None,
        });
    };
    // Row j of the group at batch place g is row g * group_size + j of the
    // whole batch.
    let local = sequence_means(advantages);
    let place = |i: usize| batch.places[i / group_size] * group_size + i % group_size;
    let mut whole = vec![0.0; batch.total_groups * group_size];
    for (i, a) in local.iter().enumerate() {
        whole[place(i)] = *a;
    }
    let whole = dp.sum(&whole)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let drawn = pad::select(&whole, pad, tau, &mut rng);
    let mut taken = vec![false; whole.len()];
    for &k in &drawn.kept {
        taken[k] = true;
    }
    let kept: Vec<usize> = (0..local.len()).filter(|&i| taken[place(i)]).collect();
    let sel = pad::PadSelection {
        kept,
        eligible: drawn.eligible,
    };
    Ok(Selection {
        rows: Cow::Owned(pick(&batch.rows, &sel.kept)),
        advantages: Cow::Owned(pick(advantages, &sel.kept)),
        old_logprobs: Cow::Owned(pick(&batch.old_logprobs, &sel.kept)),
        ref_logprobs: Cow::Owned(pick(&batch.ref_logprobs, &sel.kept)),
        pad: Some(PadStats {
            eligible: sel.eligible,
            tau,
        }),
    })
}

/// The items at `kept`; nothing from an empty list (log-probs not computed).
fn pick<T: Clone>(items: &[T], kept: &[usize]) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    kept.iter().map(|&i| items[i].clone()).collect()
}
