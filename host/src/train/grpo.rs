//! GRPO's tensor work: log-probabilities of rollout rows (policy, old policy,
//! reference) and the policy update in micro-batches with gradient
//! accumulation. The per-token terms (clipped surrogate, KL estimators,
//! aggregation) live in `rl::policy_loss`.

use std::time::Instant;

use anyhow::{ensure, Result};
use lmmhost_model::lm::{CausalLm, Entropy};
use tch::{Device, Kind, Tensor};

use super::adamw::{clip_grad_norm, AdamW};
use super::experiment::{KlPlacement, StageSettings};
use super::policy::Policy;
use super::rollout::{shared_prompt_batch, Row, SharedPromptBatch};
use crate::rl::policy_loss::{aggregate, clipped_policy_loss, kl_estimate, BatchNorm, ClipConfig};

/// Response log-probs `[b, Lr]` (and entropies) of a set of rows, each
/// distinct prompt computed once (its keys/values shared by the responses of
/// its group): the numbers of running every row whole, about half the work
/// for GRPO's 8 samples per prompt.
pub fn shared_response_stats(
    lm: &dyn CausalLm,
    sb: &SharedPromptBatch,
    entropy: Entropy,
) -> Result<(Tensor, Option<Tensor>)> {
    lm.response_token_stats(
        &sb.prompt_inputs(),
        &sb.group,
        &sb.responses,
        &sb.response_mask,
        entropy,
    )
}

/// Per-row response log-probs under `lm`, without gradients, in chunks of
/// `chunk` rows (old policy and reference passes).
pub fn rows_logprobs(
    lm: &dyn CausalLm,
    rows: &[Row],
    chunk: usize,
    pad: i64,
    multimodal: bool,
    device: Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(chunk.max(1)) {
        let refs: Vec<&Row> = part.iter().collect();
        let sb = shared_prompt_batch(&refs, pad, multimodal, device);
        let (lp, _) = tch::no_grad(|| shared_response_stats(lm, &sb, Entropy::Off))?;
        let lp = lp.to_device(Device::Cpu).to_kind(Kind::Float);
        for (i, r) in part.iter().enumerate() {
            let v = Vec::<f32>::try_from(lp.get(i as i64).narrow(0, 0, r.response.len() as i64))?;
            out.push(v);
        }
    }
    Ok(out)
}

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

/// What the update reports (token means over the updated rows).
#[derive(Debug, Clone, Default)]
pub struct UpdateStats {
    pub loss: f64,
    pub kl: f64,
    pub entropy: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    pub optimizer_steps: usize,
    /// Seconds in the policy forward and loss terms, in `backward`, and in
    /// gradient clipping plus the optimizer step (the benchmark's split).
    pub time_forward: f64,
    pub time_backward: f64,
    pub time_optimizer: f64,
}

/// Everything one GRPO update needs besides the model.
pub struct UpdateInputs<'a> {
    pub rows: &'a [Row],
    pub advantages: &'a [f64],
    /// Per row, when the update needs them (several updates per batch).
    pub old_logprobs: Option<&'a [Vec<f32>]>,
    /// Per row, when KL is in the loss.
    pub ref_logprobs: Option<&'a [Vec<f32>]>,
    pub lr: f64,
    pub entropy_coef: f64,
}

/// Runs `optim.updates_per_batch` optimizer steps over `rows` (split evenly),
/// each accumulating gradients over micro-batches of `optim.micro_batch_size`.
pub fn update(
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
    let clip = ClipConfig {
        low: g.clip_low,
        high: g.clip_high,
        dual: g.dual_clip,
    };
    let kl_in_loss = g.kl.coef > 0.0 && g.kl.placement == KlPlacement::Loss;
    let entropy_mode = if inp.entropy_coef > 0.0 {
        Entropy::Differentiable
    } else {
        Entropy::Detached
    };
    let constant = g
        .loss_constant_length
        .unwrap_or(s.rollout.max_response_tokens);
    let params = policy.tensors();
    let pad = policy.processor.tokenizer.pad_id;
    let mm = policy.is_multimodal();
    let device = policy.device;

    let n = inp.rows.len();
    let updates = s.optim.updates_per_batch.min(n).max(1);
    let mut stats = UpdateStats::default();
    let (mut tok_total, mut kl_sum, mut ent_sum, mut clip_sum) = (0.0, 0.0, 0.0, 0.0);
    for u in 0..updates {
        let (lo, hi) = (u * n / updates, (u + 1) * n / updates);
        let tokens: usize = inp.rows[lo..hi].iter().map(|r| r.response.len()).sum();
        let norm = BatchNorm {
            tokens: tokens as f64,
            sequences: (hi - lo) as f64,
            constant_length: constant as f64,
        };
        policy.zero_grad();
        let mut start = lo;
        while start < hi {
            let end = (start + s.optim.micro_batch_size).min(hi);
            let rows: Vec<&Row> = inp.rows[start..end].iter().collect();
            let t_fwd = Instant::now();
            let sb = shared_prompt_batch(&rows, pad, mm, device);
            let lr_len = sb.response_len();
            let mask = &sb.response_mask;
            let (lp, ent) = shared_response_stats(policy.lm(), &sb, entropy_mode)?;
            let old = match inp.old_logprobs {
                Some(o) => {
                    let v: Vec<&[f32]> = (start..end).map(|i| o[i].as_slice()).collect();
                    padded(&v, lr_len, device)
                }
                None => lp.detach(),
            };
            let adv: Vec<f32> = inp.advantages[start..end]
                .iter()
                .map(|&a| a as f32)
                .collect();
            let adv = Tensor::from_slice(&adv).to_device(device);
            let (pg, clipped) = clipped_policy_loss(&lp, &old, &adv, clip);
            let mut per_token = pg;
            if let (true, Some(r)) = (kl_in_loss, inp.ref_logprobs) {
                let v: Vec<&[f32]> = (start..end).map(|i| r[i].as_slice()).collect();
                let ref_lp = padded(&v, lr_len, device);
                let kl = kl_estimate(&lp, &ref_lp, g.kl.estimator);
                kl_sum += (kl.detach() * mask).sum(Kind::Double).double_value(&[]);
                per_token += kl * g.kl.coef;
            }
            let mut loss = aggregate(&per_token, mask, g.loss_aggregation, norm);
            if let Some(e) = &ent {
                ent_sum += (e.detach() * mask).sum(Kind::Double).double_value(&[]);
                if inp.entropy_coef > 0.0 {
                    loss -= aggregate(e, mask, g.loss_aggregation, norm) * inp.entropy_coef;
                }
            }
            clip_sum += (clipped * mask).sum(Kind::Double).double_value(&[]);
            stats.loss += loss.double_value(&[]);
            stats.time_forward += t_fwd.elapsed().as_secs_f64();
            let t_bwd = Instant::now();
            loss.backward();
            stats.time_backward += t_bwd.elapsed().as_secs_f64();
            start = end;
        }
        tok_total += tokens as f64;
        let t_opt = Instant::now();
        stats.grad_norm = clip_grad_norm(&params, s.optim.grad_clip);
        opt.step(&params, inp.lr)?;
        stats.time_optimizer += t_opt.elapsed().as_secs_f64();
        stats.optimizer_steps += 1;
    }
    let t = tok_total.max(1.0);
    stats.kl = kl_sum / t;
    stats.entropy = ent_sum / t;
    stats.clip_fraction = clip_sum / t;
    stats.loss /= updates as f64;
    Ok(stats)
}
