//! GSPO (Group Sequence Policy Optimization, Qwen 2025): one importance
//! ratio per sequence, the geometric mean of its tokens' ratios,
//! `s_i = exp(mean_t(logp_t - old_logp_t))`, clipped as PPO clips a token's;
//! each sequence's loss is `-min(s_i * A_i, clip(s_i) * A_i)`, averaged over
//! sequences.
//!
//! Written per token as verl writes it: every token of sequence i carries the
//! value `s_i`, and the gradient reaches each token through
//! `s_i * exp(logp_t - sg(logp_t))`, whose mean over the sequence's tokens is
//! the gradient of `s_i` itself. The caller aggregates with
//! `seq-mean-token-mean`, which makes the per-token form the sequence loss.

use tch::{Kind, Tensor};

use super::ClipConfig;

/// Per-token loss `[B, T]` (the sequence's loss on each of its tokens) and a
/// 0/1 float tensor of the sequences whose ratio was clipped.
pub fn gspo_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: ClipConfig,
) -> (Tensor, Tensor) {
    let lens = mask.sum_dim_intlist(-1, true, Kind::Float).clamp_min(1.0);
    let seq_log_ratio = ((logp - old_logp) * mask).sum_dim_intlist(-1, true, Kind::Float) / lens;
    // Value s_i on every token, gradient through each token's own log-prob;
    // the clamp keeps exp finite for sequences far from the old policy.
    let log_ratio = (logp - logp.detach() + seq_log_ratio.detach()).clamp_max(10.0);
    let ratio = log_ratio.exp();
    let unclipped = -advantages * &ratio;
    let clipped = -advantages * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    let clip_active = clipped.gt_tensor(&unclipped).to_kind(Kind::Float);
    (unclipped.maximum(&clipped), clip_active)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_tensors::{close, t2, vals};

    /// Two sequences: the first (3 tokens) has log-ratios 0.3, 0.0, -0.15,
    /// mean 0.05, s = e^0.05 = 1.0513; the second (2 tokens and a pad) has
    /// log-ratios 0.2, 0.2, s = e^0.2 = 1.2214. GSPO's small clip range
    /// (3e-4 / 4e-4) clips the first, whose advantage is positive.
    #[test]
    fn sequence_ratio_and_clip_by_hand() {
        let old = t2(&[&[-1.0, -2.0, -0.5], &[-1.0, -1.0, 0.0]]);
        let logp = t2(&[&[-0.7, -2.0, -0.65], &[-0.8, -0.8, 0.0]]);
        let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0]]);
        let adv = t2(&[&[1.0], &[-2.0]]);
        let clip = ClipConfig {
            low: 3e-4,
            high: 4e-4,
            dual: None,
        };
        let (loss, active) = gspo_loss(&logp, &old, &adv, &mask, clip);
        let s1 = 0.05f64.exp();
        let s2 = 0.2f64.exp();
        // A = 1: max(-s1, -1.0004) = -1.0004 (clipped). A = -2: max(2 s2, 2 * 1.0004) = 2 s2.
        let l1 = -(1.0004f64.min(s1));
        let l2 = 2.0 * s2.max(1.0004);
        let got = vals(&loss);
        close(&got[..3], &[l1, l1, l1]);
        close(&got[3..5], &[l2, l2]);
        close(&vals(&active)[..5], &[1.0, 1.0, 1.0, 0.0, 0.0]);
    }

    /// The gradient of the per-token form, averaged over a sequence's tokens,
    /// is the gradient of the sequence loss `-A * s_i` (unclipped).
    #[test]
    fn gradient_is_the_sequence_ratios() {
        let old = t2(&[&[-1.0, -2.0, -0.5]]);
        let logp = t2(&[&[-0.7, -2.0, -0.65]]).set_requires_grad(true);
        let mask = t2(&[&[1.0, 1.0, 1.0]]);
        let wide = ClipConfig {
            low: 0.5,
            high: 0.5,
            dual: None,
        };
        let (loss, _) = gspo_loss(&logp, &old, &t2(&[&[1.0]]), &mask, wide);
        (loss.sum(Kind::Float) / 3.0).backward();
        // d(-s)/d logp_t = -s / 3 for each of the 3 tokens.
        let s = 0.05f64.exp();
        close(&vals(&logp.grad()), &[-s / 3.0, -s / 3.0, -s / 3.0]);
    }
}
