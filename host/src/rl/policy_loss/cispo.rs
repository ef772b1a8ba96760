//! CISPO (Clipped IS-weight Policy Optimization, MiniMax-M1 2025): token-level
//! REINFORCE weighted by the clipped importance ratio, with no gradient
//! through the weight: `L_t = -sg(clip(rho_t, 1 - low, 1 + high)) * A * logp_t`.
//! Unlike PPO's clip, no token loses its gradient: a clipped token still
//! contributes, with a bounded weight.

use tch::{Kind, Tensor};

use super::ClipConfig;

/// Per-token loss `[B, T]` and a 0/1 float tensor of the tokens whose weight
/// was clipped.
pub fn cispo_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    clip: ClipConfig,
) -> (Tensor, Tensor) {
    // The clamp of the log-ratio keeps exp finite (verl: +-20).
    let ratio = (logp - old_logp).clamp(-20.0, 20.0).exp();
    let weight = ratio.clamp(1.0 - clip.low, 1.0 + clip.high).detach();
    let clip_active = weight.ne_tensor(&ratio.detach()).to_kind(Kind::Float);
    (-(weight * advantages) * logp, clip_active)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_tensors::{close, t2, vals};

    /// Ratios 1.5 (clipped to 1.28), 0.5 (clipped to 0.8) and 1.0: the loss
    /// is `-w * A * logp` and its gradient `-w * A`, also where the weight was
    /// clipped.
    #[test]
    fn clipped_weights_and_gradients_by_hand() {
        let old = t2(&[&[-1.0, -1.0, -2.0]]);
        let logp = t2(&[&[-1.0 + 1.5f64.ln(), -1.0 + 0.5f64.ln(), -2.0]]).set_requires_grad(true);
        let adv = t2(&[&[2.0]]);
        let clip = ClipConfig {
            low: 0.2,
            high: 0.28,
            dual: None,
        };
        let (loss, active) = cispo_loss(&logp, &old, &adv, clip);
        let lp = vals(&logp.detach());
        close(
            &vals(&loss),
            &[-1.28 * 2.0 * lp[0], -0.8 * 2.0 * lp[1], -2.0 * lp[2]],
        );
        close(&vals(&active), &[1.0, 1.0, 0.0]);
        loss.sum(Kind::Float).backward();
        close(&vals(&logp.grad()), &[-2.56, -1.6, -2.0]);
    }
}
