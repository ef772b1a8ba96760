//! What a GRPO step needs, decided once from the stage's settings: which
//! log-probs the rollout computes, where the KL penalty goes, the learning
//! rate and the entropy bonus at this step of the stage.

use crate::rl::kl::KlUse;
use crate::rl::schedules::learning_rate;
use crate::train::experiment::{Optim, StageSettings};

#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// Completions per prompt.
    pub group_size: usize,
    /// Prompts (groups) the update wants.
    pub prompts: usize,
    /// Dynamic sampling: only groups whose scores differ are kept, over up
    /// to `max_rounds` rounds of generation.
    pub dynamic_sampling: bool,
    pub max_rounds: u32,
    /// Where the KL penalty goes, if anywhere.
    pub kl: KlUse,
    /// Reference log-probs at rollout (the penalty applies somewhere).
    pub need_ref: bool,
    /// Old-policy log-probs at rollout: the reward's KL compares them with
    /// the reference, and several updates per batch take their ratio
    /// against them.
    pub need_old: bool,
    /// The update's ratio is taken against the rollout's log-probs (several
    /// updates per batch), else against its own detached forward pass.
    pub update_uses_old: bool,
    pub lr: f64,
    /// The entropy bonus's coefficient (0: entropy is only measured).
    pub entropy_coef: f64,
}

impl StepPlan {
    pub fn new(s: &StageSettings, stage_step: u64) -> StepPlan {
        let g = &s.grpo;
        let kl = g.kl.usage();
        let update_uses_old = s.optim.updates_per_batch > 1;
        StepPlan {
            group_size: s.rollout.group_size as usize,
            prompts: s.rollout.prompts_per_step,
            dynamic_sampling: g.dynamic_sampling.enabled,
            max_rounds: g.dynamic_sampling.max_rounds(),
            kl,
            need_ref: kl != KlUse::Off,
            need_old: update_uses_old || matches!(kl, KlUse::InReward { .. }),
            update_uses_old,
            lr: stage_lr(&s.optim, stage_step),
            entropy_coef: g.entropy.coef_at(stage_step),
        }
    }
}

/// The learning rate at step `stage_step` of the stage (each stage has its
/// own warmup and decay).
pub fn stage_lr(o: &Optim, stage_step: u64) -> f64 {
    learning_rate(
        o.lr,
        o.lr_decay,
        o.warmup_steps,
        o.decay_steps.unwrap_or(1),
        o.min_lr_ratio,
        stage_step,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::kl::{KlEstimator, KlPlacement};
    use crate::train::experiment::{Grpo, Optim, Rollout, Sft};

    fn settings() -> StageSettings {
        StageSettings {
            rollout: Rollout::default(),
            optim: Optim::default(),
            grpo: Grpo::default(),
            sft: Sft::default(),
        }
    }

    #[test]
    fn log_probs_follow_where_the_kl_goes() {
        let mut s = settings();
        let p = StepPlan::new(&s, 0);
        assert_eq!((p.kl, p.need_ref, p.need_old), (KlUse::Off, false, false));
        s.grpo.kl.coef = 0.01;
        let p = StepPlan::new(&s, 0);
        let k3 = KlEstimator::K3;
        assert_eq!(
            (p.kl, p.need_ref, p.need_old),
            (
                KlUse::InLoss {
                    coef: 0.01,
                    estimator: k3
                },
                true,
                false
            )
        );
        s.grpo.kl.placement = KlPlacement::Reward;
        let p = StepPlan::new(&s, 0);
        assert!(p.need_ref && p.need_old && !p.update_uses_old);
        s.grpo.kl.coef = 0.0;
        s.optim.updates_per_batch = 2;
        let p = StepPlan::new(&s, 0);
        assert!(!p.need_ref && p.need_old && p.update_uses_old);
    }

    #[test]
    fn rates_at_the_stage_step() {
        let mut s = settings();
        s.optim.warmup_steps = 4;
        s.grpo.entropy.coef = 0.02;
        s.grpo.entropy.warmup_steps = 2;
        let p = StepPlan::new(&s, 1);
        assert_eq!(p.lr, s.optim.lr * 0.5);
        assert_eq!(p.entropy_coef, 0.0);
        assert_eq!(StepPlan::new(&s, 2).entropy_coef, 0.02);
    }
}
