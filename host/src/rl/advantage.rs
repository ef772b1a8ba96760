//! Per-completion advantages from scalar rewards, computed within each group
//! of completions that answer the same prompt.

use serde::Deserialize;

/// How a completion's reward is turned into an advantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageEstimator {
    /// GRPO: `(r - mean) / (std + eps)`, unbiased std over the group.
    GroupNorm,
    /// Dr. GRPO / REINFORCE with a baseline: `r - mean`.
    MeanOnly,
    /// RLOO: `r - mean of the other completions of the group`.
    LeaveOneOut,
}

/// Added to the std so that groups with (nearly) identical rewards give
/// finite advantages; the value GRPO implementations use.
pub const STD_EPS: f64 = 1e-6;

/// Advantages for `rewards` laid out group after group (`group_size` each).
///
/// A group of identical rewards gets zero advantages under every estimator:
/// that is the gradient stagnation PAD and dynamic sampling address.
pub fn advantages(rewards: &[f64], group_size: usize, estimator: AdvantageEstimator) -> Vec<f64> {
    assert!(group_size > 0, "group_size must be positive");
    assert_eq!(
        rewards.len() % group_size,
        0,
        "rewards must fill whole groups"
    );
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let n = group.len() as f64;
        let mean = group.iter().sum::<f64>() / n;
        match estimator {
            AdvantageEstimator::GroupNorm => {
                // A single completion has no spread to normalise by.
                let std = if group.len() > 1 {
                    (group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                } else {
                    0.0
                };
                out.extend(group.iter().map(|r| (r - mean) / (std + STD_EPS)));
            }
            AdvantageEstimator::MeanOnly => out.extend(group.iter().map(|r| r - mean)),
            AdvantageEstimator::LeaveOneOut => {
                if group.len() == 1 {
                    out.push(0.0);
                } else {
                    let sum: f64 = group.iter().sum();
                    out.extend(group.iter().map(|r| r - (sum - r) / (n - 1.0)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn group_norm_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735.
        let a = advantages(&[1.0, 0.0, 0.0, 1.0], 4, AdvantageEstimator::GroupNorm);
        let s = (1.0f64 / 3.0).sqrt() + STD_EPS;
        close(&a, &[0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]);
        // Second group is independent of the first.
        let a = advantages(&[1.0, 0.0, 2.0, 2.0], 2, AdvantageEstimator::GroupNorm);
        let s = 0.5f64.sqrt() + STD_EPS;
        close(&a, &[0.5 / s, -0.5 / s, 0.0, 0.0]);
    }

    #[test]
    fn mean_only_and_loo_by_hand() {
        let r = [3.0, 0.0, 0.0];
        close(
            &advantages(&r, 3, AdvantageEstimator::MeanOnly),
            &[2.0, -1.0, -1.0],
        );
        // LOO: 3 - 0 = 3; 0 - 1.5 = -1.5 twice.
        close(
            &advantages(&r, 3, AdvantageEstimator::LeaveOneOut),
            &[3.0, -1.5, -1.5],
        );
    }

    #[test]
    fn identical_rewards_give_zero() {
        for e in [
            AdvantageEstimator::GroupNorm,
            AdvantageEstimator::MeanOnly,
            AdvantageEstimator::LeaveOneOut,
        ] {
            close(&advantages(&[1.0; 4], 4, e), &[0.0; 4]);
            close(&advantages(&[0.7], 1, e), &[0.0]);
        }
    }
}
