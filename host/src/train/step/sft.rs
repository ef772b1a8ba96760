//! One SFT step: draw conversations -> encode, leaving out those over
//! `sft.max_tokens` -> update -> metrics. The loss is next-token
//! cross-entropy on assistant tokens only (each assistant message's content
//! and its `<|im_end|>`), token-mean over the whole batch, accumulated over
//! micro-batches. With several ranks each encodes and trains on its share
//! of the step's conversations; the mean is over the tokens of all ranks.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use lmmhost_model::lm::ForwardInputs;
use lmmhost_model::processor::EncodedSample;
use lmmhost_sdk as sdk;
use tch::{Kind, Tensor};

use super::apply::apply_gradients;
use super::grad_sum::GradSum;
use super::metrics::SftMetrics;
use super::plan::stage_rates;
use crate::train::data::{sample_name, sft_conversation};
use crate::train::data_parallel::DataParallel;
use crate::train::experiment::StageSettings;
use crate::train::optim::AdamW;
use crate::train::policy::Policy;
use crate::train::trainer::{LongInput, Trainer};

pub(crate) fn sft_step(t: &mut Trainer, plan: &sdk::Plan, s: &StageSettings) -> Result<SftMetrics> {
    let clock = Instant::now();
    let (encoded, skipped_long) = draw_encoded(t, plan, s)?;
    // One optimizer update per step: the schedule is over the stage's steps.
    let lr = stage_rates(s, 1)?.lr_at(u64::try_from(t.opt.step).unwrap_or(0));
    let stats = update(&t.dp, &t.policy, &mut t.opt, s, &encoded, lr)
        .with_context(|| format!("step {}: the update", t.state.global_step + 1))?;
    Ok(SftMetrics {
        loss: stats.loss,
        tokens: stats.tokens,
        skipped_long,
        grad_norm: stats.grad_norm,
        lr,
        dropped: t.dropped_samples,
        time_update: clock.elapsed().as_secs_f64(),
    })
}

/// The step's conversations, encoded once (the length filter and the
/// micro-batches share it), and how many were over `sft.max_tokens`.
fn draw_encoded(
    t: &mut Trainer,
    plan: &sdk::Plan,
    s: &StageSettings,
) -> Result<(Vec<EncodedSample>, usize)> {
    let n = s.sft.batch_size.unwrap_or(s.rollout.prompts_per_step);
    t.dp.check_stage(n)?;
    // Each rank loads and trains on its share of the step's conversations.
    t.dropped_samples = 0;
    let drawn = t.draw(plan, n, 0)?;
    let (samples, datasets) = (drawn.samples, drawn.datasets);
    let convs = samples
        .iter()
        .map(sft_conversation)
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = samples.iter().map(sample_name).collect();
    let encoded = t.policy.processor.encode_named(&convs, &names, false)?;
    let before = encoded.len();
    let limit = s.sft.max_tokens;
    let mut kept = Vec::with_capacity(before);
    for (i, e) in encoded.into_iter().enumerate() {
        if e.len() <= limit {
            kept.push(e);
            continue;
        }
        let long = LongInput {
            what: "conversation",
            sample_id: &samples[i].id,
            dataset: &datasets[i],
            tokens: e.len(),
            key: "sft.max_tokens",
            limit,
        };
        t.over_limit(&long, s.sft.long_samples)?;
    }
    let encoded = kept;
    if encoded.is_empty() && t.dp.world_size() == 1 {
        bail!(
            "step {}: every SFT sample is longer than sft.max_tokens = {}",
            t.state.global_step + 1,
            s.sft.max_tokens
        );
    }
    let skipped = before - encoded.len();
    Ok((encoded, skipped))
}

#[derive(Debug, Clone, Default)]
struct SftStats {
    /// Mean negative log-likelihood per assistant token.
    loss: f64,
    tokens: usize,
    grad_norm: f64,
}

/// Prepared micro-batch: inputs on the device, targets and their mask.
struct Prepared {
    batch: lmmhost_model::processor::PreparedBatch,
    targets: Tensor,
    mask: Tensor,
}

fn prepare(policy: &Policy, samples: &[EncodedSample]) -> Result<Prepared> {
    let batch = policy.processor.batch(samples)?;
    let (b, l) = (batch.input_ids.size()[0], batch.input_ids.size()[1]);
    let pad = policy.processor.tokenizer.pad_id;
    // Position t predicts token t + 1: shift ids and the assistant mask left.
    let targets = Tensor::cat(
        &[
            batch.input_ids.narrow(1, 1, l - 1),
            Tensor::full([b, 1], pad, (Kind::Int64, tch::Device::Cpu)),
        ],
        1,
    );
    let mask = Tensor::cat(
        &[
            batch.assistant_mask.narrow(1, 1, l - 1),
            Tensor::zeros([b, 1], (Kind::Int64, tch::Device::Cpu)),
        ],
        1,
    )
    .to_kind(Kind::Float);
    Ok(Prepared {
        batch,
        targets,
        mask,
    })
}

/// Mean NLL of the assistant tokens of `samples` (full conversations encoded
/// without a generation prompt; this rank's share) and one optimizer step on
/// it, the mean and the gradient taken over every rank's tokens.
fn update(
    dp: &DataParallel,
    policy: &Policy,
    opt: &mut AdamW,
    s: &StageSettings,
    samples: &[EncodedSample],
    lr: f64,
) -> Result<SftStats> {
    let device = policy.device;
    let mbs = s.optim.micro_batch_size.max(1);
    let prepared: Vec<Prepared> = samples
        .chunks(mbs)
        .map(|c| prepare(policy, c))
        .collect::<Result<_>>()?;
    let local: f64 = prepared
        .iter()
        .map(|p| p.mask.sum(Kind::Double).double_value(&[]))
        .sum();
    // The loss is the mean over the assistant tokens of all ranks.
    let tokens = dp.sum(&[local])?[0];
    if tokens == 0.0 {
        bail!("the SFT batch has no assistant tokens to learn from");
    }
    let all = policy.tensors();
    let slots: Vec<usize> = (0..all.len()).filter(|&i| all[i].requires_grad()).collect();
    let trainable: Vec<Tensor> = slots.iter().map(|&i| all[i].shallow_clone()).collect();
    let mut acc = GradSum::new(dp, opt, &all, slots, prepared.len())?;
    let mut loss_sum = 0.0;
    let last = prepared.len().saturating_sub(1);
    for (k, p) in prepared.iter().enumerate() {
        if k == last {
            // The last micro-batch's gradients are reduced as its backward
            // pass finishes them (when the sum allows it).
            acc.arm_overlap(dp, &all)?;
        }
        let ids = p.batch.input_ids.to_device(device);
        let attn = p.batch.attention_mask.to_device(device);
        let pos = policy
            .is_multimodal()
            .then(|| p.batch.position_ids.to_device(device));
        let pv = p.batch.pixel_values.as_ref().map(|t| t.to_device(device));
        let grid = p.batch.image_grid_thw.as_ref().map(|t| t.to_device(device));
        let inputs = ForwardInputs {
            input_ids: &ids,
            attention_mask: &attn,
            position_ids: pos.as_ref(),
            pixel_values: pv.as_ref(),
            image_grid_thw: grid.as_ref(),
        };
        let lp = policy
            .lm()
            .token_logprobs(&inputs, &p.targets.to_device(device))?;
        let loss = -(lp * p.mask.to_device(device)).sum(Kind::Float) / tokens;
        loss_sum += loss.double_value(&[]);
        // Text-only conversations with the language model frozen reach no
        // trainable parameter.
        let grads = if loss.requires_grad() {
            Tensor::f_run_backward(&[&loss], &trainable, false, false)?
        } else {
            Vec::new()
        };
        acc.add(dp, opt, &all, &grads)?;
    }
    acc.finish(dp, opt, &all)?;
    let loss_sum = dp.sum(&[loss_sum])?[0];
    let grad_norm = apply_gradients(dp, opt, &mut acc, &all, s.optim.grad_clip, lr)?;
    Ok(SftStats {
        loss: loss_sum,
        tokens: tokens as usize,
        grad_norm,
    })
}
