//! KL divergence to the frozen reference model: the per-token estimators, the
//! `[grpo.kl]` settings, and the one decision of where the penalty applies
//! (the loss or the reward). Both places use [`kl_estimate`].

use serde::Deserialize;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlEstimator {
    K1,
    K2,
    K3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlPlacement {
    /// `loss += coef * KL` per token.
    Loss,
    /// `reward -= coef * KL` per token, before advantages (LMM-R1).
    Reward,
}

/// `[grpo.kl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kl {
    /// 0 skips the reference model entirely.
    pub coef: f64,
    pub estimator: KlEstimator,
    pub placement: KlPlacement,
}

impl Default for Kl {
    fn default() -> Self {
        Kl {
            coef: 0.0,
            estimator: KlEstimator::K3,
            placement: KlPlacement::Loss,
        }
    }
}

/// Where a step applies the KL penalty, with what it needs there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KlUse {
    /// No penalty: no reference model is needed.
    Off,
    /// Subtracted from each completion's reward before advantages.
    InReward { coef: f64, estimator: KlEstimator },
    /// Added to the per-token loss.
    InLoss { coef: f64, estimator: KlEstimator },
}

impl Kl {
    /// The only place that turns the settings into a use of the penalty.
    pub fn usage(&self) -> KlUse {
        let (coef, estimator) = (self.coef, self.estimator);
        if coef > 0.0 {
            match self.placement {
                KlPlacement::Reward => KlUse::InReward { coef, estimator },
                KlPlacement::Loss => KlUse::InLoss { coef, estimator },
            }
        } else {
            KlUse::Off
        }
    }
}

impl KlUse {
    /// The estimator, when a penalty applies anywhere.
    pub fn estimator(&self) -> Option<KlEstimator> {
        match *self {
            KlUse::Off => None,
            KlUse::InReward { estimator, .. } | KlUse::InLoss { estimator, .. } => Some(estimator),
        }
    }
}

/// Per-token KL estimate between the policy and the frozen reference,
/// `d = ref_logp - logp`: k1 `-d`, k2 `d^2 / 2`, k3 `exp(d) - d - 1` (clamped to [-10, 10]).
pub fn kl_estimate(logp: &Tensor, ref_logp: &Tensor, estimator: KlEstimator) -> Tensor {
    let d = ref_logp - logp;
    match estimator {
        KlEstimator::K1 => -d,
        KlEstimator::K2 => d.square() * 0.5,
        KlEstimator::K3 => (d.exp() - &d - 1.0).clamp(-10.0, 10.0),
    }
}

/// The KL of one completion: [`kl_estimate`] summed over its tokens.
pub fn sequence_kl(logp: &[f32], ref_logp: &[f32], estimator: KlEstimator) -> f64 {
    kl_estimate(
        &Tensor::from_slice(logp),
        &Tensor::from_slice(ref_logp),
        estimator,
    )
    .sum(Kind::Double)
    .double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_tensors::{close, t2, vals};

    #[test]
    fn kl_estimators_by_hand() {
        let logp = t2(&[&[-1.0, -2.0]]);
        let reference = t2(&[&[-1.5, -1.0]]); // d = -0.5, 1.0
        close(
            &vals(&kl_estimate(&logp, &reference, KlEstimator::K1)),
            &[0.5, -1.0],
        );
        close(
            &vals(&kl_estimate(&logp, &reference, KlEstimator::K2)),
            &[0.125, 0.5],
        );
        let k3 = |d: f64| d.exp() - d - 1.0;
        close(
            &vals(&kl_estimate(&logp, &reference, KlEstimator::K3)),
            &[k3(-0.5), k3(1.0)],
        );
        // Large gaps are clamped.
        let far = kl_estimate(&t2(&[&[-30.0]]), &t2(&[&[0.0]]), KlEstimator::K3);
        close(&vals(&far), &[10.0]);
    }

    #[test]
    fn sequence_kl_sums_the_tokens() {
        // d = -0.5, 1.0 under k1: 0.5 - 1.0.
        let kl = sequence_kl(&[-1.0, -2.0], &[-1.5, -1.0], KlEstimator::K1);
        assert!((kl + 0.5).abs() < 1e-6, "{kl}");
    }

    #[test]
    fn usage_follows_coef_and_placement() {
        let mut kl = Kl::default();
        assert_eq!(kl.usage(), KlUse::Off);
        assert_eq!(kl.usage().estimator(), None);
        kl.coef = 0.1;
        let est = KlEstimator::K3;
        assert_eq!(
            kl.usage(),
            KlUse::InLoss {
                coef: 0.1,
                estimator: est
            }
        );
        kl.placement = KlPlacement::Reward;
        assert_eq!(
            kl.usage(),
            KlUse::InReward {
                coef: 0.1,
                estimator: est
            }
        );
        assert_eq!(kl.usage().estimator(), Some(est));
    }
}
