//! One GRPO step, phase by phase. What the step needs (which log-probs,
//! where the KL penalty goes, the learning rate and the entropy bonus) is
//! decided once, in the [`StepPlan`]; each phase takes what the previous one
//! returned.

use std::time::Instant;

use anyhow::Result;
use lmmhost_sdk as sdk;

use super::collect::collect;
use super::metrics::{GrpoMetrics, GrpoTimes};
use super::plan::StepPlan;
use super::select::select;
use super::shape::shape_rewards;
use super::update::{update, LossKl, UpdateInputs};
use crate::rl::advantage::advantages;
use crate::train::data::derive_seed;
use crate::train::experiment::StageSettings;
use crate::train::policy::Reference;
use crate::train::trainer::Trainer;

pub(crate) fn grpo_step(
    t: &mut Trainer,
    plan: &sdk::Plan,
    s: &StageSettings,
) -> Result<GrpoMetrics> {
    let clock = Instant::now();
    let p = StepPlan::new(s, t.state.stage_step);
    let g = &s.grpo;
    if p.need_ref && t.reference.is_none() {
        t.reference = Some(Reference::load(&t.exp.model, t.exp.seed)?);
    }
    t.policy.set_trainable(g.freeze_vision, g.freeze_language);

    // Rollouts, their scores and log-probs, over dynamic sampling's rounds.
    let collected = collect(t, plan, s, &p)?;
    let batch = &collected.batch;
    // Rewards, less the KL penalty if it goes there, then advantages.
    let shaped = shape_rewards(batch, p.kl);
    let adv = advantages(&shaped.totals, p.group_size, g.advantage);
    // The rows to train on: PAD's draw, or all of them.
    let pad_seed = derive_seed(t.exp.seed, "pad", t.state.global_step);
    let selected = select(batch, &adv, &g.pad, pad_seed, t.state.stage_step);
    // The policy update.
    let t_update = Instant::now();
    let stats = if selected.rows.is_empty() {
        None
    } else {
        let inputs = UpdateInputs {
            rows: &selected.rows,
            advantages: &selected.advantages,
            old_logprobs: p.update_uses_old.then_some(&selected.old_logprobs[..]),
            kl: LossKl::of(p.kl, &selected.ref_logprobs),
            lr: p.lr,
            entropy_coef: p.entropy_coef,
        };
        Some(update(&t.policy, &mut t.opt, s, &inputs)?)
    };
    let time = GrpoTimes {
        rollout: collected.time.rollout,
        reward: collected.time.reward,
        logprobs: collected.time.logprobs,
        update: t_update.elapsed().as_secs_f64(),
        step: clock.elapsed().as_secs_f64(),
    };
    Ok(GrpoMetrics::new(
        &p, &collected, shaped.kl, &adv, &selected, stats, time,
    ))
}
