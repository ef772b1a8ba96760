//! Scalar schedules over a stage's optimizer updates: the learning rate
//! (warmup, then constant, linear or cosine decay that ends with the stage)
//! and the entropy bonus's coefficient (ReVisual-R1: 0 during warmup, then
//! decayed per update).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrDecay {
    Constant,
    Linear,
    Cosine,
}

/// Learning rate at optimizer update `step` (0-based) of `total` updates:
/// linear warmup over `warmup` updates (update k gets `lr * (k + 1) / warmup`),
/// then the decay down to `min_ratio * lr` at update `total`.
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

/// `[grpo.entropy]`: the entropy bonus and its schedule, counted in
/// optimizer updates of the stage (several per step with
/// `optim.updates_per_batch > 1`), as ReVisual-R1's actor anneals it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntropyBonus {
    pub coef: f64,
    /// Updates at coefficient 0 before the bonus starts.
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
    /// The coefficient at optimizer update `update` of the stage ([`entropy_coef`]).
    pub fn coef_at(&self, update: u64) -> f64 {
        entropy_coef(self.coef, self.warmup_steps, self.decay, update)
    }
}

/// Entropy bonus coefficient (ReVisual-R1): 0 during `warmup` updates, then
/// `coef * decay^(update - warmup)`.
pub fn entropy_coef(coef: f64, warmup: u64, decay: f64, step: u64) -> f64 {
    if step < warmup {
        0.0
    } else {
        coef * decay.powf((step - warmup) as f64)
    }
}

/// The learning rate and entropy coefficient of every optimizer update of a
/// stage, indexed by the updates done in the stage before it.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    pub lr: f64,
    pub decay: LrDecay,
    /// Updates of linear warmup.
    pub warmup: u64,
    /// Updates the decay ends at (the stage's last).
    pub total: u64,
    pub min_ratio: f64,
    pub entropy: EntropyBonus,
}

impl RateSchedule {
    /// The learning rate of the stage's update `update` (0-based).
    pub fn lr_at(&self, update: u64) -> f64 {
        learning_rate(
            self.lr,
            self.decay,
            self.warmup,
            self.total,
            self.min_ratio,
            update,
        )
    }

    /// The entropy bonus's coefficient at the stage's update `update`.
    pub fn entropy_coef_at(&self, update: u64) -> f64 {
        self.entropy.coef_at(update)
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

    #[test]
    fn rate_schedule_by_update() {
        // Warmup over 3 updates, then cosine from update 3 to update 11.
        let r = RateSchedule {
            lr: 1.0,
            decay: LrDecay::Cosine,
            warmup: 3,
            total: 11,
            min_ratio: 0.1,
            entropy: EntropyBonus {
                coef: 0.02,
                warmup_steps: 2,
                decay: 0.5,
            },
        };
        assert!((r.lr_at(0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.lr_at(3) - 1.0).abs() < 1e-12);
        // Halfway through the decay: 0.1 + 0.9 * 0.5.
        assert!((r.lr_at(7) - 0.55).abs() < 1e-12, "{}", r.lr_at(7));
        assert!((r.lr_at(11) - 0.1).abs() < 1e-12);
        assert!((r.lr_at(20) - 0.1).abs() < 1e-12);
        assert_eq!(r.entropy_coef_at(1), 0.0);
        assert_eq!(r.entropy_coef_at(2), 0.02);
        assert_eq!(r.entropy_coef_at(4), 0.005);
    }
}
