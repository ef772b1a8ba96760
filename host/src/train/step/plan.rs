//! What a GRPO step needs, decided once from the stage's settings: which
//! log-probs the rollout computes and at which temperature, where the KL
//! penalty goes, how advantages are shaped, the learning rate and entropy
//! bonus of each optimizer update, and PAD's temperature at this step.

use anyhow::{bail, Result};

use crate::rl::kl::KlUse;
use crate::rl::schedules::{LrDecay, RateSchedule};
use crate::train::experiment::StageSettings;

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
    /// Every log-prob the step trains on (policy, old policy, reference) and
    /// the entropy are those of `softmax(logits / temperature)`, the
    /// distribution the rollout sampled from (verl, TRL and OpenRLHF divide
    /// by the rollout temperature too).
    pub temperature: f64,
    /// Learning rate and entropy coefficient by the stage's update index.
    pub rates: RateSchedule,
    /// Optimizer updates the stage has done before this step.
    pub first_update: u64,
    /// Clamp of each completion's advantage before the KL term and whitening.
    pub advantage_clip: Option<[f64; 2]>,
    /// Standardise the advantages over the batch's tokens.
    pub whiten: bool,
    /// PAD's softmax temperature at this step, when PAD is on.
    pub pad_tau: Option<f64>,
}

impl StepPlan {
    /// `stage_step` steps and `updates_done` optimizer updates of the stage
    /// came before this step.
    pub fn new(s: &StageSettings, stage_step: u64, updates_done: u64) -> Result<StepPlan> {
        let g = &s.grpo;
        let kl = g.kl.usage();
        let update_uses_old = s.optim.updates_per_batch > 1;
        let pad_tau = if g.pad.enabled {
            let Some(horizon) = g.pad.tau_horizon(s.optim.stage_steps) else {
                bail!(
                    "grpo.pad: the temperature decays over the stage, whose length is unknown (the schedule did not set optim.stage_steps); set grpo.pad.tau_decay_steps"
                );
            };
            Some(g.pad.tau(stage_step, horizon))
        } else {
            None
        };
        Ok(StepPlan {
            group_size: s.rollout.group_size as usize,
            prompts: s.rollout.prompts_per_step,
            dynamic_sampling: g.dynamic_sampling.enabled,
            max_rounds: g.dynamic_sampling.max_rounds(),
            kl,
            need_ref: kl != KlUse::Off,
            need_old: update_uses_old || kl.in_reward(),
            update_uses_old,
            temperature: s.rollout.temperature,
            rates: stage_rates(s, s.optim.updates_per_batch as u64)?,
            first_update: updates_done,
            advantage_clip: g.advantage_clip,
            whiten: g.whiten_advantages,
            pad_tau,
        })
    }

    /// The learning rate of the step's first update (what the metrics log).
    pub fn lr(&self) -> f64 {
        self.rates.lr_at(self.first_update)
    }

    /// The entropy coefficient of the step's first update.
    pub fn entropy_coef(&self) -> f64 {
        self.rates.entropy_coef_at(self.first_update)
    }
}

/// The stage's learning-rate and entropy schedules over its optimizer
/// updates (`updates_per_step` per step): warmup `optim.warmup_steps`
/// updates or `ceil(optim.warmup_ratio * updates)`, then the decay over
/// `optim.decay_steps` updates, by default the stage's, so that it ends with
/// the stage.
pub fn stage_rates(s: &StageSettings, updates_per_step: u64) -> Result<RateSchedule> {
    let o = &s.optim;
    let stage_updates = o.stage_steps.map(|n| n * updates_per_step.max(1));
    let total = o.decay_steps.or(stage_updates);
    let needs_length = o.lr_decay != LrDecay::Constant || o.warmup_ratio.is_some();
    let Some(total) = total.or((!needs_length).then_some(0)) else {
        bail!(
            "optim.lr_decay = {:?} / optim.warmup_ratio need the stage's length: set optim.decay_steps, or use a schedule that reports it (schedule-staged sets optim.stage_steps)",
            o.lr_decay
        );
    };
    let warmup = match o.warmup_ratio {
        Some(r) => (r * total as f64).ceil() as u64,
        None => o.warmup_steps,
    };
    Ok(RateSchedule {
        lr: o.lr,
        decay: o.lr_decay,
        warmup,
        total,
        min_ratio: o.min_lr_ratio,
        entropy: s.grpo.entropy.clone(),
    })
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
        let p = StepPlan::new(&s, 0, 0).unwrap();
        assert_eq!((p.kl, p.need_ref, p.need_old), (KlUse::Off, false, false));
        s.grpo.kl.coef = 0.01;
        let p = StepPlan::new(&s, 0, 0).unwrap();
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
        for placement in [KlPlacement::Reward, KlPlacement::RewardSequence] {
            s.grpo.kl.placement = placement;
            let p = StepPlan::new(&s, 0, 0).unwrap();
            assert!(p.need_ref && p.need_old && !p.update_uses_old);
        }
        s.grpo.kl.coef = 0.0;
        s.optim.updates_per_batch = 2;
        let p = StepPlan::new(&s, 0, 0).unwrap();
        assert!(!p.need_ref && p.need_old && p.update_uses_old);
        s.rollout.temperature = 0.7;
        assert_eq!(StepPlan::new(&s, 0, 0).unwrap().temperature, 0.7);
    }

    /// Rates are indexed by the stage's optimizer updates, not its steps:
    /// with 4 updates per step, the entropy warmup of 2 updates ends inside
    /// the first step and the warmup ratio counts updates.
    #[test]
    fn rates_follow_the_updates_of_the_stage() {
        let mut s = settings();
        s.optim.warmup_steps = 4;
        s.grpo.entropy.coef = 0.02;
        s.grpo.entropy.warmup_steps = 2;
        let p = StepPlan::new(&s, 0, 1).unwrap();
        assert_eq!(p.lr(), s.optim.lr * 0.5);
        assert_eq!(p.entropy_coef(), 0.0);
        assert_eq!(StepPlan::new(&s, 0, 2).unwrap().entropy_coef(), 0.02);

        s.optim.updates_per_batch = 4;
        s.optim.warmup_steps = 0;
        s.optim.warmup_ratio = Some(0.05);
        s.optim.lr_decay = LrDecay::Cosine;
        // Without the stage's length, a ratio or a decay cannot be placed.
        let err = StepPlan::new(&s, 0, 0).unwrap_err().to_string();
        assert!(err.contains("optim.stage_steps"), "{err}");
        s.optim.stage_steps = Some(50);
        let r = StepPlan::new(&s, 0, 0).unwrap().rates;
        // 50 steps x 4 updates = 200 updates; warmup ceil(0.05 * 200) = 10.
        assert_eq!((r.warmup, r.total), (10, 200));
        assert!(r.lr_at(200) < 1e-15, "the cosine ends with the stage");
    }

    #[test]
    fn pad_temperature_decays_over_the_stage() {
        let mut s = settings();
        s.grpo.pad.enabled = true;
        assert!(StepPlan::new(&s, 0, 0).is_err());
        s.optim.stage_steps = Some(5);
        let tau = |step| StepPlan::new(&s, step, 0).unwrap().pad_tau.unwrap();
        assert!((tau(0) - 1.0).abs() < 1e-12);
        assert!((tau(2) - 0.65).abs() < 1e-12);
        assert!((tau(4) - 0.3).abs() < 1e-12);
    }
}
