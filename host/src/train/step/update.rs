//! Update: the GRPO policy update, `optim.updates_per_batch` optimizer
//! updates over consecutive mini-batches of the rows, each in micro-batches
//! with gradient accumulation. The per-token terms live in `rl/`: the policy
//! losses and the aggregation in `rl::policy_loss`, the KL estimator in
//! `rl::kl`, the rates in `rl::schedules`.

use std::time::Instant;

use anyhow::{ensure, Result};
use lmmhost_model::lm::{Entropy, ResponseRows};
use lmmhost_model::parallel::{map_jobs, ReadOnlyShared};
use tch::{Device, Kind, Tensor};

use super::apply::apply_gradients;
use super::grad_sum::GradSum;
use super::logprobs::shared_response_stats;
use crate::rl::kl::{kl_estimate, KlEstimator, KlUse};
use crate::rl::policy_loss::{aggregate, policy_loss, BatchNorm};
use crate::rl::schedules::RateSchedule;
use crate::train::data_parallel::DataParallel;
use crate::train::experiment::StageSettings;
use crate::train::optim::AdamW;
use crate::train::policy::Policy;
use crate::train::rollout::{shared_prompt_batch, Row, SharedPromptBatch};

/// `[b, Lr]` tensor of per-row values (zero-padded).
fn padded(values: &[&[f32]], lr: i64, device: Device) -> Tensor {
    let mut flat = vec![0f32; values.len() * lr as usize];
    for (i, v) in values.iter().enumerate() {
        flat[i * lr as usize..i * lr as usize + v.len()].copy_from_slice(v);
    }
    Tensor::from_slice(&flat)
        .view([values.len() as i64, lr])
        .to_device(device)
}

/// One micro-batch of the update, as tensors a worker thread can take.
struct MicroBatch {
    sb: SharedPromptBatch,
    /// `[b, Lr]` old log-probs (several updates per batch), else the
    /// detached current ones.
    old: Option<Tensor>,
    /// `[b, Lr]` reference log-probs, when KL is in the loss.
    reference: Option<Tensor>,
    /// `[b, Lr]` per-token advantages.
    advantages: Tensor,
}

/// A micro-batch's loss, sums for the metrics, timings and gradients.
#[derive(Default)]
struct MicroBatchResult {
    loss: f64,
    kl_sum: f64,
    ent_sum: f64,
    clip_sum: f64,
    /// Largest |ratio - 1| over the micro-batch's tokens.
    ratio_dev: f64,
    secs_forward: f64,
    secs_backward: f64,
    /// One per trainable parameter (undefined where it got none).
    grads: Vec<Tensor>,
}

/// One optimizer update: its mini-batch's loss and clip fraction, the
/// gradient norm and the rates it ran at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateRecord {
    pub loss: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub entropy_coef: f64,
    /// Largest |ratio - 1| over the mini-batch's tokens (0 for the first
    /// update of a batch when the ratio is taken against the rollout's
    /// policy at its own temperature, up to float rounding).
    pub ratio_max_dev: f64,
}

/// What the update reports (token means over the updated rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateStats {
    /// Mean of the updates' losses.
    pub loss: f64,
    pub kl: f64,
    pub entropy: f64,
    pub clip_fraction: f64,
    /// The last update's.
    pub grad_norm: f64,
    /// Each optimizer update in order.
    pub updates: Vec<UpdateRecord>,
    /// Seconds in the policy forward and loss terms, in `backward`, and in
    /// gradient clipping plus the optimizer step (the benchmark's split).
    pub time_forward: f64,
    pub time_backward: f64,
    pub time_optimizer: f64,
}

/// The KL penalty of the loss: the reference's log-probs per row, and how
/// much of the estimate each token adds.
#[derive(Clone, Copy)]
pub struct LossKl<'a> {
    pub ref_logprobs: &'a [Vec<f32>],
    pub coef: f64,
    pub estimator: KlEstimator,
}

impl<'a> LossKl<'a> {
    /// The penalty when `kl` puts it in the loss.
    pub fn of(kl: KlUse, ref_logprobs: &'a [Vec<f32>]) -> Option<LossKl<'a>> {
        match kl {
            KlUse::InLoss { coef, estimator } => Some(LossKl {
                ref_logprobs,
                coef,
                estimator,
            }),
            KlUse::Off | KlUse::InReward { .. } | KlUse::InRewardSequence { .. } => None,
        }
    }
}

/// Everything one GRPO update needs besides the model.
pub struct UpdateInputs<'a> {
    pub rows: &'a [Row],
    /// Per row, per response token.
    pub advantages: &'a [Vec<f32>],
    /// Per row, when the ratio is taken against the rollout's policy
    /// (several updates per batch).
    pub old_logprobs: Option<&'a [Vec<f32>]>,
    /// When KL is in the loss.
    pub kl: Option<LossKl<'a>>,
    /// Log-probs and entropies are those of `softmax(logits / temperature)`.
    pub temperature: f64,
    /// The learning rate and entropy coefficient of each update, by the
    /// optimizer's count of the stage's updates.
    pub rates: &'a RateSchedule,
}

/// Runs `optim.updates_per_batch` optimizer updates over consecutive
/// mini-batches of `rows` (split evenly, in order, as verl splits them),
/// each accumulating gradients over micro-batches of
/// `optim.micro_batch_size`. Every mini-batch's ratio is taken against the
/// same old log-probs (the rollout policy's), so from the second update on
/// the clip can engage. With several ranks, each holds its share of the
/// rows: the loss is normalised by the counts over all ranks and the
/// gradients summed over them, so every rank takes the step one process
/// would take on all the rows (a mini-batch is the ranks' mini-batches
/// together).
pub fn update(
    dp: &DataParallel,
    policy: &Policy,
    opt: &mut AdamW,
    s: &StageSettings,
    inp: &UpdateInputs,
) -> Result<UpdateStats> {
    ensure!(
        inp.rows.len() == inp.advantages.len(),
        "one advantage per row"
    );
    let g = &s.grpo;
    let clip = g.clip();
    let loss_kind = g.policy_loss;
    let agg = loss_kind.aggregation(g.loss_aggregation);
    let temperature = inp.temperature;
    let constant = g
        .loss_constant_length
        .unwrap_or(s.rollout.max_response_tokens);
    // Gradients are taken for the trainable parameters only (frozen ones
    // have none to give); the optimizer sees the whole list, by index.
    let all = policy.tensors();
    let slots: Vec<usize> = (0..all.len()).filter(|&i| all[i].requires_grad()).collect();
    let params: Vec<Tensor> = slots.iter().map(|&i| all[i].shallow_clone()).collect();
    ensure!(
        !params.is_empty(),
        "the update has no trainable parameters (are both freeze_vision and freeze_language set?)"
    );
    let pad = policy.processor.tokenizer.pad_id;
    let mm = policy.is_multimodal();
    let device = policy.device;

    let n = inp.rows.len();
    // Every rank takes the same number of updates, as many as one process
    // would take on all the rows; a rank with fewer rows than updates (or
    // none) contributes nothing to some of them.
    let total = dp.sum(&[n as f64])?[0] as usize;
    let updates = s.optim.updates_per_batch.min(total).max(1);
    let mut stats = UpdateStats::default();
    let (mut tok_total, mut kl_sum, mut ent_sum, mut clip_sum) = (0.0, 0.0, 0.0, 0.0);
    for u in 0..updates {
        let index = u64::try_from(opt.step).unwrap_or(0);
        let lr = inp.rates.lr_at(index);
        let entropy_coef = inp.rates.entropy_coef_at(index);
        let entropy_mode = if entropy_coef > 0.0 {
            Entropy::Differentiable
        } else {
            Entropy::Detached
        };
        let (lo, hi) = (u * n / updates, (u + 1) * n / updates);
        let tokens: usize = inp.rows[lo..hi].iter().map(|r| r.response.len()).sum();
        // The loss is normalised by the mini-batch's counts over all ranks.
        let global = dp.sum(&[tokens as f64, (hi - lo) as f64])?;
        if global[1] == 0.0 {
            // Every rank's share of this mini-batch is empty (shares smaller
            // than the number of updates): no step, as no rows means none.
            continue;
        }
        let norm = BatchNorm {
            tokens: global[0],
            sequences: global[1],
            constant_length: constant as f64,
        };
        let t_fwd = Instant::now();
        // The micro-batches as tensors (built on this thread: rows share
        // their prompts by `Rc`); each one's loss and gradients are computed
        // on a worker, and the gradients added in place, in micro-batch order.
        let mut jobs = Vec::new();
        let mut start = lo;
        while start < hi {
            let end = (start + s.optim.micro_batch_size).min(hi);
            let rows: Vec<&Row> = inp.rows[start..end].iter().collect();
            let sb = shared_prompt_batch(&rows, pad, mm, device);
            let lr_len = sb.response_len();
            let per_row = |v: &[Vec<f32>]| {
                let v: Vec<&[f32]> = (start..end).map(|i| v[i].as_slice()).collect();
                padded(&v, lr_len, device)
            };
            jobs.push(MicroBatch {
                old: inp.old_logprobs.map(per_row),
                reference: inp.kl.map(|k| per_row(k.ref_logprobs)),
                advantages: per_row(inp.advantages),
                sb,
            });
            start = end;
        }
        // SAFETY: the workers run forward passes and return their gradients
        // (`f_run_backward`); the parameters change only after they end.
        let lm = unsafe { ReadOnlyShared::new(policy.lm()) };
        let shared_params = unsafe { ReadOnlyShared::new(&params) };
        let kl_term = inp.kl.map(|k| (k.coef, k.estimator));
        let checkpointing = policy.activation_checkpointing;
        let run = |_, mb: MicroBatch| {
            let t0 = Instant::now();
            let mask = &mb.sb.response_mask;
            let mut out = MicroBatchResult::default();
            // The loss of the micro-batch's log-probs (and entropies); the
            // metrics' sums go to `out` on the way.
            let mut loss_of = |lp: &Tensor, ent: Option<&Tensor>| -> Result<Tensor> {
                let old = mb
                    .old
                    .as_ref()
                    .map_or_else(|| lp.detach(), |o| o.shallow_clone());
                let (pg, clipped) = policy_loss(loss_kind, lp, &old, &mb.advantages, mask, clip);
                let mut per_token = pg;
                if let (Some(ref_lp), Some((coef, estimator))) = (&mb.reference, kl_term) {
                    let kl = kl_estimate(lp, ref_lp, estimator);
                    out.kl_sum = (kl.detach() * mask).sum(Kind::Double).double_value(&[]);
                    per_token += kl * coef;
                }
                let mut loss = aggregate(&per_token, mask, agg, norm);
                if let Some(e) = ent {
                    out.ent_sum = (e.detach() * mask).sum(Kind::Double).double_value(&[]);
                    if entropy_coef > 0.0 {
                        loss -= aggregate(e, mask, agg, norm) * entropy_coef;
                    }
                }
                out.clip_sum = (clipped * mask).sum(Kind::Double).double_value(&[]);
                out.ratio_dev = tch::no_grad(|| {
                    (((lp - &old).exp() - 1.0).abs() * mask)
                        .max()
                        .double_value(&[])
                });
                out.loss = loss.double_value(&[]);
                out.secs_forward = t0.elapsed().as_secs_f64();
                Ok(loss)
            };
            let grads = if checkpointing {
                let prompts = mb.sb.prompt_inputs();
                let rows = ResponseRows {
                    prompts: &prompts,
                    group: &mb.sb.group,
                    responses: &mb.sb.responses,
                    response_mask: mask,
                    entropy: entropy_mode,
                    temperature,
                };
                (*lm.get()).response_loss_gradients(&rows, shared_params.get(), &mut loss_of)?
            } else {
                let (lp, ent) =
                    shared_response_stats(*lm.get(), &mb.sb, entropy_mode, temperature)?;
                let loss = loss_of(&lp, ent.as_ref())?;
                // A micro-batch can reach no trainable parameter (text-only
                // prompts with the language model frozen): its loss has no
                // graph and gives no gradients.
                if loss.requires_grad() {
                    Tensor::f_run_backward(&[&loss], shared_params.get(), false, false)?
                } else {
                    Vec::new()
                }
            };
            out.grads = grads;
            // Up to the loss is forward (with checkpointing: the pass without
            // a graph), the rest backward (with the layers' recomputation).
            out.secs_backward = t0.elapsed().as_secs_f64() - out.secs_forward;
            Ok(out)
        };
        // The micro-batches run in waves of one per worker; each wave's
        // gradients are added in place before the next starts, so at most
        // `workers` gradient copies exist besides the sum (the same sum, in
        // micro-batch order, for any worker count).
        let mut acc = GradSum::new(dp, opt, &all, slots.clone(), jobs.len())?;
        let (mut fwd, mut bwd) = (0.0, 0.0);
        let mut record = UpdateRecord {
            lr,
            entropy_coef,
            ..UpdateRecord::default()
        };
        // With the all-reduce overlapped, the last micro-batch runs alone,
        // with hooks that reduce its gradients as the backward finishes them.
        let overlap = acc.can_overlap(dp) && !checkpointing;
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let left = jobs.len();
            let size = if overlap && left > 1 {
                policy.workers.min(left - 1)
            } else {
                policy.workers
            };
            let wave: Vec<MicroBatch> = jobs.by_ref().take(size).collect();
            if overlap && jobs.peek().is_none() {
                acc.arm_overlap(dp, &all)?;
            }
            for r in map_jobs(wave, policy.workers, run)? {
                acc.add(dp, opt, &all, &r.grads)?;
                record.loss += r.loss;
                record.clip_fraction += r.clip_sum;
                record.ratio_max_dev = record.ratio_max_dev.max(r.ratio_dev);
                kl_sum += r.kl_sum;
                ent_sum += r.ent_sum;
                clip_sum += r.clip_sum;
                fwd += r.secs_forward;
                bwd += r.secs_backward;
            }
        }
        acc.finish(dp, opt, &all)?;
        // Wall time of the micro-batches, split between forward and backward
        // as the workers' own clocks split it.
        let wall = t_fwd.elapsed().as_secs_f64();
        let share = if fwd + bwd > 0.0 {
            fwd / (fwd + bwd)
        } else {
            1.0
        };
        stats.time_forward += wall * share;
        stats.time_backward += wall * (1.0 - share);
        tok_total += global[0];
        let t_opt = Instant::now();
        // The update's sums over all ranks, then the gradients over them and
        // the same clipped step everywhere (state is created for the
        // parameters that train, frozen ones have none).
        let sums = dp.sum(&[record.loss, record.clip_fraction])?;
        (record.loss, record.clip_fraction) = (sums[0], sums[1]);
        record.ratio_max_dev = dp.max(&[record.ratio_max_dev])?[0];
        record.clip_fraction /= global[0].max(1.0);
        record.grad_norm = apply_gradients(dp, opt, &mut acc, &all, s.optim.grad_clip, lr)?;
        drop(acc);
        stats.time_optimizer += t_opt.elapsed().as_secs_f64();
        stats.loss += record.loss;
        stats.grad_norm = record.grad_norm;
        stats.updates.push(record);
    }
    let sums = dp.sum(&[kl_sum, ent_sum, clip_sum])?;
    let (kl_sum, ent_sum, clip_sum) = (sums[0], sums[1], sums[2]);
    let t = tok_total.max(1.0);
    stats.kl = kl_sum / t;
    stats.entropy = ent_sum / t;
    stats.clip_fraction = clip_sum / t;
    stats.loss /= stats.updates.len().max(1) as f64;
    Ok(stats)
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "update_vision_tests.rs"]
mod vision_tests;
