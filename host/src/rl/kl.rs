//! KL divergence to the frozen reference model: the per-token estimators, the
//! `[grpo.kl]` settings, which model is the reference, and the one decision
//! of where the penalty applies (the loss, the reward per token as OpenRLHF
//! puts it, or the reward per sequence). Every place uses [`kl_estimate`].

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
    /// `loss += coef * KL` per token (GRPO's `use_kl_loss`: verl, EasyR1).
    Loss,
    /// Per token, as OpenRLHF (hence LMM-R1) does: token t's reward is
    /// `-coef * KL_t`, the rule reward's advantage is added at the last token,
    /// and each token's advantage is its return to go (gamma 1).
    Reward,
    /// One summed KL per sequence subtracted from its reward before the
    /// advantages (a different estimator; not what OpenRLHF does).
    RewardSequence,
}

/// Which model the KL penalty compares the policy with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlReference {
    /// The policy as the stage started: what verl, EasyR1 and OpenRLHF
    /// effectively use, since each stage of a paper's recipe is a run that
    /// starts from the previous stage's checkpoint and freezes a copy of it.
    #[default]
    StageStart,
    /// The model the run loaded (`model.path`), whatever stages came before.
    Initial,
}

/// `[grpo.kl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kl {
    /// 0 skips the reference model entirely.
    pub coef: f64,
    pub estimator: KlEstimator,
    pub placement: KlPlacement,
    pub reference: KlReference,
    /// Where the reference model lives ("cpu", "cuda:N"; default: the
    /// policy's `model.device`). Its log-prob pass runs there.
    pub reference_device: Option<String>,
    /// Its dtype ("f32", "bf16", "f16"; default: the policy's storage type).
    pub reference_dtype: Option<String>,
}

impl Default for Kl {
    fn default() -> Self {
        Kl {
            coef: 0.0,
            estimator: KlEstimator::K3,
            placement: KlPlacement::Loss,
            reference: KlReference::StageStart,
            reference_device: None,
            reference_dtype: None,
        }
    }
}

/// Where a step applies the KL penalty, with what it needs there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KlUse {
    /// No penalty: no reference model is needed.
    Off,
    /// Per token in the reward (OpenRLHF): returns to go of `-coef * KL_t`
    /// on top of each completion's advantage.
    InReward { coef: f64, estimator: KlEstimator },
    /// The sequence's summed KL times `coef`, subtracted from its reward
    /// before advantages.
    InRewardSequence { coef: f64, estimator: KlEstimator },
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
                KlPlacement::RewardSequence => KlUse::InRewardSequence { coef, estimator },
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
            KlUse::InReward { estimator, .. }
            | KlUse::InRewardSequence { estimator, .. }
            | KlUse::InLoss { estimator, .. } => Some(estimator),
        }
    }

    /// The penalty shapes rewards, so the rollout policy's log-probs are needed.
    pub fn in_reward(&self) -> bool {
        matches!(
            self,
            KlUse::InReward { .. } | KlUse::InRewardSequence { .. }
        )
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

/// [`kl_estimate`] of each token of one completion.
pub fn token_kl(logp: &[f32], ref_logp: &[f32], estimator: KlEstimator) -> Vec<f64> {
    let t = kl_estimate(
        &Tensor::from_slice(logp),
        &Tensor::from_slice(ref_logp),
        estimator,
    );
    // A 1-D double tensor always converts.
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap_or_default()
}

/// The KL of one completion: [`kl_estimate`] summed over its tokens.
pub fn sequence_kl(logp: &[f32], ref_logp: &[f32], estimator: KlEstimator) -> f64 {
    token_kl(logp, ref_logp, estimator).iter().sum()
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
        let per_token = token_kl(&[-1.0, -2.0], &[-1.5, -1.0], KlEstimator::K1);
        close(&per_token, &[0.5, -1.0]);
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
        assert!(kl.usage().in_reward());
        kl.placement = KlPlacement::RewardSequence;
        assert!(matches!(kl.usage(), KlUse::InRewardSequence { .. }));
        assert!(kl.usage().in_reward());
        assert_eq!(Kl::default().reference, KlReference::StageStart);
    }
}
