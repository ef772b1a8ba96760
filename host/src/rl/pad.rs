//! PAD, Prioritized Advantage Distillation (ReVisual-R1), as the paper
//! defines it: keep completions whose |advantage| lies in `[t_low, t_high]`,
//! then draw `k = min(ceil(ratio * N), |E|)` of them without replacement with
//! probability `softmax(|A| / tau)`.
//!
//! The authors' released code differs (power law `|A|^1.5`, sampling with
//! replacement, thresholds 0.03 / 0.97); we follow the paper and expose the
//! knobs. Note that `t_high` below the largest |A| drops the rare correct
//! answers of hard prompts, which carry the largest advantages.

use rand::Rng;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PadConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Lower bound on |A| (exclusive of zero-advantage samples when > 0).
    #[serde(default = "default_t_low")]
    pub t_low: f64,
    /// Upper bound on |A|.
    #[serde(default = "default_t_high")]
    pub t_high: f64,
    /// Fraction of the batch to keep: `k = ceil(ratio * N)`.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Softmax temperature at the start of the stage ...
    #[serde(default = "default_tau_start")]
    pub tau_start: f64,
    /// ... and at its last step (linear in between).
    #[serde(default = "default_tau_end")]
    pub tau_end: f64,
    /// Steps the decay takes instead of the whole stage.
    #[serde(default)]
    pub tau_decay_steps: Option<u64>,
}

fn default_t_low() -> f64 {
    0.05
}
fn default_t_high() -> f64 {
    f64::INFINITY
}
fn default_ratio() -> f64 {
    0.5
}
fn default_tau_start() -> f64 {
    1.0
}
fn default_tau_end() -> f64 {
    0.3
}

impl Default for PadConfig {
    fn default() -> Self {
        PadConfig {
            enabled: false,
            t_low: default_t_low(),
            t_high: default_t_high(),
            ratio: default_ratio(),
            tau_start: default_tau_start(),
            tau_end: default_tau_end(),
            tau_decay_steps: None,
        }
    }
}

impl PadConfig {
    /// Checks the knobs; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.t_low.is_nan() || self.t_low <= 0.0 {
            return Err(format!(
                "pad.t_low must be > 0 (got {}): zero-advantage samples carry no gradient",
                self.t_low
            ));
        }
        if self.t_high.is_nan() || self.t_high < self.t_low {
            return Err(format!(
                "pad.t_high ({}) must be >= pad.t_low ({})",
                self.t_high, self.t_low
            ));
        }
        if !(self.ratio > 0.0 && self.ratio <= 1.0) {
            return Err(format!("pad.ratio must be in (0, 1] (got {})", self.ratio));
        }
        if !(self.tau_start > 0.0 && self.tau_end > 0.0) {
            return Err("pad.tau_start and pad.tau_end must be > 0".into());
        }
        Ok(())
    }

    /// Steps from `tau_start` to `tau_end`: `tau_decay_steps`, else the
    /// stage's, so that its last step draws at `tau_end`; `None` when
    /// neither is known.
    pub fn tau_horizon(&self, stage_steps: Option<u64>) -> Option<u64> {
        self.tau_decay_steps
            .or_else(|| stage_steps.map(|n| n.saturating_sub(1)))
    }

    /// The softmax temperature after `stage_step` steps of a decay over `horizon` steps.
    pub fn tau(&self, stage_step: u64, horizon: u64) -> f64 {
        if horizon == 0 {
            return self.tau_end;
        }
        let f = (stage_step as f64 / horizon as f64).min(1.0);
        self.tau_start + (self.tau_end - self.tau_start) * f
    }
}

/// What PAD kept, for the metrics log.
#[derive(Debug, Clone, PartialEq)]
pub struct PadSelection {
    /// Indices into the batch, ascending.
    pub kept: Vec<usize>,
    /// |E|: samples inside the thresholds before the draw.
    pub eligible: usize,
}

/// Selects the completions to train on, drawing at softmax temperature
/// `tau`. `advantages` holds one value per completion.
pub fn select<R: Rng>(advantages: &[f64], cfg: &PadConfig, tau: f64, rng: &mut R) -> PadSelection {
    let eligible: Vec<usize> = (0..advantages.len())
        .filter(|&i| {
            let a = advantages[i].abs();
            a >= cfg.t_low && a <= cfg.t_high
        })
        .collect();
    let n = advantages.len();
    let k = ((cfg.ratio * n as f64).ceil() as usize).min(eligible.len());
    // Softmax weights, shifted by the max for stability.
    let max = eligible
        .iter()
        .map(|&i| advantages[i].abs() / tau)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut pool: Vec<(usize, f64)> = eligible
        .iter()
        .map(|&i| (i, ((advantages[i].abs() / tau) - max).exp()))
        .collect();
    let mut kept = Vec::with_capacity(k);
    // Sequential draws without replacement: each draw renormalises over what is left.
    for _ in 0..k {
        let total: f64 = pool.iter().map(|(_, w)| w).sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = pool.len() - 1;
        for (j, (_, w)) in pool.iter().enumerate() {
            if u < *w {
                pick = j;
                break;
            }
            u -= w;
        }
        kept.push(pool.swap_remove(pick).0);
    }
    kept.sort_unstable();
    PadSelection {
        kept,
        eligible: eligible.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn thresholds_and_k_by_hand() {
        let cfg = PadConfig {
            enabled: true,
            t_low: 0.1,
            t_high: 1.5,
            ratio: 0.5,
            ..Default::default()
        };
        // |A| = 0, 0.05, 0.2, 1.0, 2.0, 0.5: eligible are indices 2, 3, 5 (|E| = 3).
        let adv = [0.0, -0.05, 0.2, -1.0, 2.0, 0.5];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let sel = select(&adv, &cfg, 1.0, &mut rng);
        assert_eq!(sel.eligible, 3);
        // k = min(ceil(0.5 * 6), 3) = 3: every eligible sample is kept.
        assert_eq!(sel.kept, vec![2, 3, 5]);
        let cfg = PadConfig { ratio: 0.2, ..cfg };
        // k = min(ceil(1.2), 3) = 2.
        let sel = select(&adv, &cfg, 1.0, &mut rng);
        assert_eq!(sel.kept.len(), 2);
        assert!(sel.kept.iter().all(|i| [2, 3, 5].contains(i)));
    }

    #[test]
    fn draw_follows_softmax_of_abs_advantage() {
        // Two eligible samples, |A| = 1 and 0, tau = 1: P(first) = e / (e + 1) = 0.7311.
        let cfg = PadConfig {
            enabled: true,
            t_low: 1e-9,
            ratio: 0.5,
            tau_start: 1.0,
            tau_end: 1.0,
            ..Default::default()
        };
        let adv = [1.0, 1e-6];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let trials = 20_000;
        let firsts = (0..trials)
            .filter(|_| select(&adv, &cfg, 1.0, &mut rng).kept == vec![0])
            .count();
        let p = firsts as f64 / trials as f64;
        let expect = 1f64.exp() / (1f64.exp() + 1.0);
        // 6 standard deviations of a binomial proportion: ~0.019.
        assert!((p - expect).abs() < 0.02, "p = {p}, expected {expect}");
    }

    #[test]
    fn tau_decays_linearly_over_the_stage() {
        let cfg = PadConfig {
            tau_start: 1.0,
            tau_end: 0.3,
            ..Default::default()
        };
        // A stage of 11 steps: step 10, its last, draws at tau_end.
        let h = cfg.tau_horizon(Some(11)).unwrap();
        assert_eq!(h, 10);
        assert!((cfg.tau(0, h) - 1.0).abs() < 1e-12);
        assert!((cfg.tau(5, h) - 0.65).abs() < 1e-12);
        assert!((cfg.tau(10, h) - 0.3).abs() < 1e-12);
        // A 401-step stage decays 40 times slower.
        let long = cfg.tau_horizon(Some(401)).unwrap();
        assert!((cfg.tau(200, long) - 0.65).abs() < 1e-12);
        assert_eq!(cfg.tau_horizon(None), None);
        // A configured horizon wins over the stage's length.
        let fixed = PadConfig {
            tau_decay_steps: Some(4),
            ..cfg
        };
        assert_eq!(fixed.tau_horizon(Some(400)), Some(4));
        assert!((fixed.tau(50, 4) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn validation_names_the_key() {
        let cfg = PadConfig {
            t_low: 0.0,
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().contains("pad.t_low"));
        let cfg = PadConfig {
            ratio: 1.5,
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().contains("pad.ratio"));
    }
}
