//! One GRPO step, phase by phase. What the step needs (which log-probs and
//! at which temperature, where the KL penalty goes, how advantages are
//! shaped, the rates of each update, PAD's temperature) is decided once, in
//! the [`StepPlan`]; each phase takes what the previous one returned.

use std::time::Instant;

use anyhow::{Context, Result};
use lmmhost_sdk as sdk;

use super::collect::collect;
use super::metrics::{GrpoMetrics, GrpoTimes};
use super::plan::StepPlan;
use super::select::select;
use super::shape::shape;
use super::update::{update, LossKl, UpdateInputs};
use crate::train::data::derive_seed;
use crate::train::experiment::StageSettings;
use crate::train::trainer::Trainer;

pub(crate) fn grpo_step(
    t: &mut Trainer,
    plan: &sdk::Plan,
    s: &StageSettings,
) -> Result<GrpoMetrics> {
    let clock = Instant::now();
    let updates_done = u64::try_from(t.opt.step).unwrap_or(0);
    let p = StepPlan::new(s, t.state.stage_step, updates_done)?;
    t.dp.check_stage(p.prompts)?;
    let g = &s.grpo;
    if p.need_ref {
        t.ensure_reference(s)?;
    }

    // Rollouts, their scores and log-probs, over dynamic sampling's rounds.
    let collected = collect(t, plan, s, &p)?;
    let batch = &collected.batch;
    // Advantages: rewards less the KL penalty where it goes there, per group,
    // then per token.
    let shaped = shape(&t.dp, batch, &p, g.advantage)?;
    // The rows to train on: PAD's draw, or all of them.
    let pad_seed = derive_seed(t.exp.seed, "pad", t.state.global_step);
    let selected = select(
        &t.dp,
        batch,
        &shaped.tokens,
        p.group_size,
        &g.pad,
        pad_seed,
        p.pad_tau,
    )?;
    // The policy update, unless no rank has a row to train on (a rank whose
    // share has none takes part with an empty share).
    let t_update = Instant::now();
    let rows_anywhere = t.dp.sum(&[selected.rows.len() as f64])?[0];
    let stats = if rows_anywhere == 0.0 {
        None
    } else {
        let inputs = UpdateInputs {
            rows: &selected.rows,
            advantages: &selected.advantages,
            old_logprobs: p.update_uses_old.then_some(&selected.old_logprobs[..]),
            kl: LossKl::of(p.kl, &selected.ref_logprobs),
            temperature: p.temperature,
            rates: &p.rates,
        };
        let step = t.state.global_step + 1;
        Some(
            update(&t.dp, &t.policy, &mut t.opt, s, &inputs)
                .with_context(|| format!("step {step}: the update"))?,
        )
    };
    let time = GrpoTimes {
        rollout: collected.time.rollout,
        reward: collected.time.reward,
        logprobs: collected.time.logprobs,
        update: t_update.elapsed().as_secs_f64(),
        step: clock.elapsed().as_secs_f64(),
    };
    Ok(GrpoMetrics::new(
        &p,
        &collected,
        shaped.kl,
        &shaped.sequence,
        &selected,
        stats,
        time,
    ))
}
