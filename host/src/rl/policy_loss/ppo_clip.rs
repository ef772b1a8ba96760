//! PPO's clipped surrogate (GRPO, DAPO's clip-higher, dual clip).

use tch::{Kind, Tensor};

use super::ClipConfig;

/// Per-token loss `[B, T]` and a 0/1 float tensor of where the clip bound was active.
///
/// `L = max(-A * rho, -A * clip(rho, 1 - low, 1 + high))`, `rho = exp(logp - old_logp)`;
/// with dual clip, for `A < 0`: `L = min(L, -A * c)`. `advantages` is `[B, T]`
/// or `[B, 1]` (one value per sequence).
pub fn ppo_clip_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    clip: ClipConfig,
) -> (Tensor, Tensor) {
    let adv = advantages;
    let ratio = (logp - old_logp).exp();
    let unclipped = -adv * &ratio;
    let clipped = -adv * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    let mut loss = unclipped.maximum(&clipped);
    let clip_active = clipped.gt_tensor(&unclipped).to_kind(Kind::Float);
    if let Some(c) = clip.dual {
        let bound = -adv * c;
        loss = loss.where_self(&adv.ge(0.0), &loss.minimum(&bound));
    }
    (loss, clip_active)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_tensors::{close, t2, vals};

    #[test]
    fn clipped_loss_by_hand() {
        // ratios exp(log 1.5) = 1.5, exp(log 0.5) = 0.5, 1.0; advantages +1 (row 0) and -1 (row 1).
        let logp = t2(&[
            &[1.5f64.ln(), 0.5f64.ln(), 0.0],
            &[1.5f64.ln(), 0.5f64.ln(), 0.0],
        ]);
        let old = Tensor::zeros_like(&logp);
        let adv = t2(&[&[1.0], &[-1.0]]);
        let clip = ClipConfig {
            low: 0.2,
            high: 0.28,
            dual: None,
        };
        let (loss, active) = ppo_clip_loss(&logp, &old, &adv, clip);
        // A = +1: max(-1.5, -1.28) = -1.28 (clipped); max(-0.5, -0.8) = -0.5; -1.
        // A = -1: max(1.5, 1.28) = 1.5; max(0.5, 0.8) = 0.8 (clipped); 1.
        close(&vals(&loss), &[-1.28, -0.5, -1.0, 1.5, 0.8, 1.0]);
        close(&vals(&active), &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        // Per-token advantages: the same numbers token by token.
        let adv_tokens = t2(&[&[1.0, 1.0, 1.0], &[-1.0, -1.0, -1.0]]);
        let (per_token, _) = ppo_clip_loss(&logp, &old, &adv_tokens, clip);
        close(&vals(&per_token), &vals(&loss));
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
        let (loss, _) = ppo_clip_loss(&logp, &old, &t2(&[&[-1.0]]), clip);
        // rho = 5: max(5, 1.2) = 5 -> min(5, 3) = 3; rho = 2: max(2, 1.2) = 2 -> stays 2.
        close(&vals(&loss), &[3.0, 2.0]);
        let (loss, _) = ppo_clip_loss(&logp, &old, &t2(&[&[1.0]]), clip);
        // Positive advantages are untouched by the dual clip: max(-5, -1.2) = -1.2.
        close(&vals(&loss), &[-1.2, -1.2]);
    }
}
