//! Per-completion advantages from scalar rewards, computed within each group
//! of completions that answer the same prompt; then per-token advantages:
//! OpenRLHF's returns to go of a per-token KL penalty on top of them, and its
//! whitening over the batch's tokens.

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

/// Per-token advantages of each row: its sequence advantage `seq_adv[i]`,
/// less `coef` times the KL of its tokens from t on when `token_kl` is given
/// (OpenRLHF's order: token t's reward is `-coef * KL_t`, the sequence's
/// reward is added at its last token, and a token's advantage is its return
/// to go with gamma 1). `lens[i]` is row i's token count.
pub fn token_advantages(
    seq_adv: &[f64],
    lens: &[usize],
    token_kl: Option<(&[Vec<f64>], f64)>,
) -> Vec<Vec<f32>> {
    seq_adv
        .iter()
        .zip(lens)
        .enumerate()
        .map(|(i, (&a, &n))| match token_kl {
            Some((kl, coef)) => {
                let mut out = vec![0f32; n];
                let mut to_go = 0.0;
                for t in (0..n).rev() {
                    to_go -= coef * kl[i].get(t).copied().unwrap_or(0.0);
                    out[t] = (a + to_go) as f32;
                }
                out
            }
            None => vec![a as f32; n],
        })
        .collect()
}

/// OpenRLHF's advantage whitening: `(A - mean) / std` over every token of
/// the batch (population variance, floored at 1e-8).
pub fn whiten_tokens(adv: &mut [Vec<f32>]) {
    let n: usize = adv.iter().map(Vec::len).sum();
    if n == 0 {
        return;
    }
    let mean = adv.iter().flatten().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let var = adv
        .iter()
        .flatten()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    standardise_tokens(adv, mean, var);
}

/// `(x - mean) / sqrt(var)` for every token's advantage, with the mean and
/// variance of a batch (which may be larger than `adv`: the whole batch of
/// several ranks).
pub fn standardise_tokens(adv: &mut [Vec<f32>], mean: f64, var: f64) {
    let rstd = 1.0 / var.max(1e-8).sqrt();
    for row in adv.iter_mut() {
        for x in row.iter_mut() {
            *x = ((f64::from(*x) - mean) * rstd) as f32;
        }
    }
}

/// Each row's mean token advantage (its advantage when it has one value).
pub fn sequence_means(adv: &[Vec<f32>]) -> Vec<f64> {
    adv.iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).sum::<f64>() / r.len().max(1) as f64)
        .collect()
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

    /// OpenRLHF's reinforce_baseline with the KL in the reward, by hand: a
    /// group of two with rule rewards 1 and 0 (baseline 0.5), k1 KL per
    /// token, beta = 0.1. Row 0 has KL 0.5, -1.0: its token rewards are
    /// -0.05 and 0.1 + 0.5 (the rule advantage at the last token), so its
    /// returns to go are 0.55 and 0.6. Row 1 (KL 0.2 on one token):
    /// -0.5 - 0.02 = -0.52.
    #[test]
    fn kl_in_the_reward_per_token_by_hand() {
        let seq = advantages(&[1.0, 0.0], 2, AdvantageEstimator::MeanOnly);
        close(&seq, &[0.5, -0.5]);
        let kl = vec![vec![0.5, -1.0], vec![0.2]];
        let adv = token_advantages(&seq, &[2, 1], Some((&kl, 0.1)));
        let near = |a: &[f64], b: &[f64]| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-6, "{a:?} != {b:?}");
            }
        };
        let got: Vec<f64> = adv.iter().flatten().map(|&x| f64::from(x)).collect();
        near(&got, &[0.55, 0.6, -0.52]);
        // Without KL: the sequence advantage on every token.
        let plain = token_advantages(&seq, &[2, 1], None);
        assert_eq!(plain, vec![vec![0.5f32, 0.5], vec![-0.5]]);
        // Whitened over the 3 tokens: mean 0.21, population std 0.5305.
        let mut w = adv.clone();
        whiten_tokens(&mut w);
        let mean = (0.55 + 0.6 - 0.52) / 3.0;
        let std = (([0.55f64, 0.6, -0.52]
            .iter()
            .map(|x| (x - mean).powi(2))
            .sum::<f64>())
            / 3.0)
            .sqrt();
        let want: Vec<f64> = [0.55, 0.6, -0.52]
            .iter()
            .map(|x| (x - mean) / std)
            .collect();
        let got: Vec<f64> = w.iter().flatten().map(|&x| f64::from(x)).collect();
        near(&got, &want);
        near(&sequence_means(&adv), &[0.575, -0.52]);
    }
}
