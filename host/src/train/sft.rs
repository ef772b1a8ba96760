//! Supervised fine-tuning steps: next-token cross-entropy on assistant tokens
//! only (each assistant message's content and its `<|im_end|>`), token-mean
//! over the whole batch, accumulated over micro-batches.

use anyhow::{bail, Result};
use lmmhost_model::lm::ForwardInputs;
use lmmhost_model::processor::EncodedSample;
use tch::{Kind, Tensor};

use super::adamw::{clip_grad_norm, AdamW};
use super::experiment::StageSettings;
use super::policy::Policy;

#[derive(Debug, Clone, Default)]
pub struct SftStats {
    /// Mean negative log-likelihood per assistant token.
    pub loss: f64,
    pub tokens: usize,
    pub grad_norm: f64,
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
/// without a generation prompt) and, when `opt` is given, one optimizer step on it.
pub fn step(
    policy: &Policy,
    opt: Option<&mut AdamW>,
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
    let tokens: f64 = prepared
        .iter()
        .map(|p| p.mask.sum(Kind::Double).double_value(&[]))
        .sum();
    if tokens == 0.0 {
        bail!("the SFT batch has no assistant tokens to learn from");
    }
    let train = opt.is_some();
    if train {
        policy.zero_grad();
    }
    let mut loss_sum = 0.0;
    for p in &prepared {
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
        let run = || -> Result<Tensor> {
            let lp = policy
                .lm()
                .token_logprobs(&inputs, &p.targets.to_device(device))?;
            Ok(-(lp * p.mask.to_device(device)).sum(Kind::Float) / tokens)
        };
        let loss = if train { run()? } else { tch::no_grad(run)? };
        loss_sum += loss.double_value(&[]);
        if train {
            loss.backward();
        }
    }
    let mut stats = SftStats {
        loss: loss_sum,
        tokens: tokens as usize,
        grad_norm: 0.0,
    };
    if let Some(opt) = opt {
        let params = policy.tensors();
        stats.grad_norm = clip_grad_norm(&params, s.optim.grad_clip);
        opt.step(&params, lr)?;
    }
    Ok(stats)
}
