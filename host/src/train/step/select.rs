//! Select: the rows the update trains on. With PAD, a draw of the rows with
//! informative advantages (`rl::pad`); otherwise every row of the batch.

use std::borrow::Cow;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::collect::Batch;
use crate::rl::advantage::sequence_means;
use crate::rl::pad::{self, PadConfig};
use crate::train::rollout::Row;

/// PAD's draw, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadStats {
    /// Rows inside the thresholds before the draw.
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
/// KL is in the reward per token).
pub fn select<'a>(
    batch: &'a Batch,
    advantages: &'a [Vec<f32>],
    pad: &PadConfig,
    seed: u64,
    tau: Option<f64>,
) -> Selection<'a> {
    let Some(tau) = tau else {
        return Selection {
            rows: Cow::Borrowed(&batch.rows),
            advantages: Cow::Borrowed(advantages),
            old_logprobs: Cow::Borrowed(&batch.old_logprobs),
            ref_logprobs: Cow::Borrowed(&batch.ref_logprobs),
            pad: None,
        };
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sel = pad::select(&sequence_means(advantages), pad, tau, &mut rng);
    Selection {
        rows: Cow::Owned(pick(&batch.rows, &sel.kept)),
        advantages: Cow::Owned(pick(advantages, &sel.kept)),
        old_logprobs: Cow::Owned(pick(&batch.old_logprobs, &sel.kept)),
        ref_logprobs: Cow::Owned(pick(&batch.ref_logprobs, &sel.kept)),
        pad: Some(PadStats {
            eligible: sel.eligible,
            tau,
        }),
    }
}

/// The items at `kept`; nothing from an empty list (log-probs not computed).
fn pick<T: Clone>(items: &[T], kept: &[usize]) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    kept.iter().map(|&i| items[i].clone()).collect()
}
