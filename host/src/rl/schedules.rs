//! Scalar schedules: learning rate with warmup, entropy coefficient.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrDecay {
    Constant,
    Linear,
    Cosine,
}

/// Learning rate at optimizer step `step` (0-based) of `total` steps:
/// linear warmup from 0 over `warmup` steps, then the decay down to `min_ratio * lr`.
pub fn learning_rate(
    lr: f64,
    decay: LrDecay,
    warmup: u64,
    total: u64,
    min_ratio: f64,
    step: u64,
) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let factor = match decay {
        LrDecay::Constant => 1.0,
        LrDecay::Linear => 1.0 - progress,
        LrDecay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    };
    lr * (min_ratio + (1.0 - min_ratio) * factor)
}

/// `[grpo.entropy]`: the entropy bonus and its schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntropyBonus {
    pub coef: f64,
    pub warmup_steps: u64,
    /// Multiplied into the coefficient after every update past warmup.
    pub decay: f64,
}

impl Default for EntropyBonus {
    fn default() -> Self {
        EntropyBonus {
            coef: 0.0,
            warmup_steps: 0,
            decay: 1.0,
        }
    }
}

impl EntropyBonus {
    /// The coefficient at step `step` of the stage ([`entropy_coef`]).
    pub fn coef_at(&self, step: u64) -> f64 {
        entropy_coef(self.coef, self.warmup_steps, self.decay, step)
    }
}

/// Entropy bonus coefficient (ReVisual-R1): 0 during `warmup` steps, then
/// `coef * decay^(step - warmup)`.
pub fn entropy_coef(coef: f64, warmup: u64, decay: f64, step: u64) -> f64 {
    if step < warmup {
        0.0
    } else {
        coef * decay.powf((step - warmup) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| learning_rate(1e-3, LrDecay::Cosine, 2, 12, 0.0, s);
        assert!((lr(0) - 0.5e-3).abs() < 1e-15);
        assert!((lr(1) - 1e-3).abs() < 1e-15);
        assert!((lr(2) - 1e-3).abs() < 1e-15);
        assert!((lr(7) - 0.5e-3).abs() < 1e-12); // halfway through the decay
        assert!(lr(12).abs() < 1e-15);
        let lin = learning_rate(1.0, LrDecay::Linear, 0, 10, 0.1, 5);
        assert!((lin - (0.1 + 0.9 * 0.5)).abs() < 1e-12);
        assert_eq!(learning_rate(1.0, LrDecay::Constant, 0, 10, 0.0, 9), 1.0);
    }

    #[test]
    fn entropy_warmup_and_decay() {
        assert_eq!(entropy_coef(0.02, 3, 0.985, 2), 0.0);
        assert!((entropy_coef(0.02, 3, 0.985, 3) - 0.02).abs() < 1e-15);
        assert!((entropy_coef(0.02, 3, 0.985, 5) - 0.02 * 0.985 * 0.985).abs() < 1e-15);
    }
}
