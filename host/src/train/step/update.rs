//! Update: the GRPO policy update in micro-batches with gradient
//! accumulation. The per-token terms live in `rl/`: the clipped surrogate and
//! the aggregation in `rl::policy_loss`, the KL estimator in `rl::kl`.

use std::time::Instant;

use anyhow::{ensure, Result};
use lmmhost_model::lm::Entropy;
use lmmhost_model::parallel::{map_jobs, ReadOnlyShared};
use tch::{Device, Kind, Tensor};

use super::logprobs::shared_response_stats;
use crate::rl::kl::{kl_estimate, KlEstimator, KlUse};
use crate::rl::policy_loss::{aggregate, clipped_policy_loss, BatchNorm};
use crate::train::adamw::{clip_grad_norm, AdamW};
use crate::train::experiment::StageSettings;
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
    advantages: Tensor,
}

/// A micro-batch's loss, sums for the metrics, timings and gradients.
#[derive(Default)]
struct MicroBatchResult {
    loss: f64,
    kl_sum: f64,
    ent_sum: f64,
    clip_sum: f64,
    secs_forward: f64,
    secs_backward: f64,
    /// One per trainable parameter (undefined where it got none).
    grads: Vec<Tensor>,
}

/// Adds `grads` to the parameters' (zeroed) `.grad`: the backward of
/// `sum(p * g)` is exactly `g`, and it creates `.grad` where none exists yet.
fn set_grads(params: &[Tensor], grads: Vec<Option<Tensor>>) {
    let terms: Vec<Tensor> = params
        .iter()
        .zip(grads)
        .filter_map(|(p, g)| g.map(|g| (p * g.detach()).sum(Kind::Float)))
        .collect();
    if let Some(first) = terms.first() {
        let total = terms[1..].iter().fold(first.shallow_clone(), |a, b| a + b);
        total.backward();
    }
}

/// What the update reports (token means over the updated rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateStats {
    pub loss: f64,
    pub kl: f64,
    pub entropy: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
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
            KlUse::Off | KlUse::InReward { .. } => None,
        }
    }
}

/// Everything one GRPO update needs besides the model.
pub struct UpdateInputs<'a> {
    pub rows: &'a [Row],
    pub advantages: &'a [f64],
    /// Per row, when the ratio is taken against the rollout's policy
    /// (several updates per batch).
    pub old_logprobs: Option<&'a [Vec<f32>]>,
    /// When KL is in the loss.
    pub kl: Option<LossKl<'a>>,
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
    let clip = g.clip();
    let entropy_mode = if inp.entropy_coef > 0.0 {
        Entropy::Differentiable
    } else {
        Entropy::Detached
    };
    let constant = g
        .loss_constant_length
        .unwrap_or(s.rollout.max_response_tokens);
    // Gradients are taken for the trainable parameters only (frozen ones
    // have none to give).
    let params: Vec<Tensor> = policy
        .tensors()
        .into_iter()
        .filter(|t| t.requires_grad())
        .collect();
    ensure!(
        !params.is_empty(),
        "the update has no trainable parameters (are both freeze_vision and freeze_language set?)"
    );
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
        let t_fwd = Instant::now();
        // The micro-batches as tensors (built on this thread: rows share
        // their prompts by `Rc`); each one's loss and gradients are computed
        // on a worker, and the gradients summed below in micro-batch order.
        let mut jobs = Vec::new();
        let mut start = lo;
        while start < hi {
            let end = (start + s.optim.micro_batch_size).min(hi);
            let rows: Vec<&Row> = inp.rows[start..end].iter().collect();
            let sb = shared_prompt_batch(&rows, pad, mm, device);
            let lr_len = sb.response_len();
            let per_row = |v: Option<&[Vec<f32>]>| {
                v.map(|v| {
                    let v: Vec<&[f32]> = (start..end).map(|i| v[i].as_slice()).collect();
                    padded(&v, lr_len, device)
                })
            };
            let adv: Vec<f32> = inp.advantages[start..end]
                .iter()
                .map(|&a| a as f32)
                .collect();
            jobs.push(MicroBatch {
                old: per_row(inp.old_logprobs),
                reference: per_row(inp.kl.map(|k| k.ref_logprobs)),
                advantages: Tensor::from_slice(&adv).to_device(device),
                sb,
            });
            start = end;
        }
        // SAFETY: the workers run forward passes and return their gradients
        // (`f_run_backward`); the parameters change only after they end.
        let lm = unsafe { ReadOnlyShared::new(policy.lm()) };
        let shared_params = unsafe { ReadOnlyShared::new(&params) };
        let entropy_coef = inp.entropy_coef;
        let kl_term = inp.kl.map(|k| (k.coef, k.estimator));
        let results = map_jobs(jobs, policy.workers, |_, mb| {
            let t0 = Instant::now();
            let mask = &mb.sb.response_mask;
            let (lp, ent) = shared_response_stats(*lm.get(), &mb.sb, entropy_mode)?;
            let old = mb.old.unwrap_or_else(|| lp.detach());
            let (pg, clipped) = clipped_policy_loss(&lp, &old, &mb.advantages, clip);
            let mut per_token = pg;
            let mut out = MicroBatchResult::default();
            if let (Some(ref_lp), Some((coef, estimator))) = (&mb.reference, kl_term) {
                let kl = kl_estimate(&lp, ref_lp, estimator);
                out.kl_sum = (kl.detach() * mask).sum(Kind::Double).double_value(&[]);
                per_token += kl * coef;
            }
            let mut loss = aggregate(&per_token, mask, g.loss_aggregation, norm);
            if let Some(e) = &ent {
                out.ent_sum = (e.detach() * mask).sum(Kind::Double).double_value(&[]);
                if entropy_coef > 0.0 {
                    loss -= aggregate(e, mask, g.loss_aggregation, norm) * entropy_coef;
                }
            }
            out.clip_sum = (clipped * mask).sum(Kind::Double).double_value(&[]);
            out.loss = loss.double_value(&[]);
            out.secs_forward = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            out.grads = Tensor::f_run_backward(&[&loss], shared_params.get(), false, false)?;
            out.secs_backward = t1.elapsed().as_secs_f64();
            Ok(out)
        })?;
        // Sum in micro-batch order (the same sum for any worker count), then
        // hand it to the parameters' `.grad` for clipping and the optimizer.
        let mut total: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
        let (mut fwd, mut bwd) = (0.0, 0.0);
        for r in &results {
            for (acc, g) in total.iter_mut().zip(&r.grads) {
                if g.defined() {
                    *acc = Some(match acc.take() {
                        Some(a) => a + g,
                        None => g.shallow_clone(),
                    });
                }
            }
            stats.loss += r.loss;
            kl_sum += r.kl_sum;
            ent_sum += r.ent_sum;
            clip_sum += r.clip_sum;
            fwd += r.secs_forward;
            bwd += r.secs_backward;
        }
        drop(results);
        policy.zero_grad();
        set_grads(&params, total);
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
        tok_total += tokens as f64;
        let t_opt = Instant::now();
        stats.grad_norm = clip_grad_norm(&params, s.optim.grad_clip);
        // The optimizer holds one state per parameter, frozen ones included.
        opt.step(&policy.tensors(), inp.lr)?;
        stats.time_optimizer += t_opt.elapsed().as_secs_f64();
    }
    let t = tok_total.max(1.0);
    stats.kl = kl_sum / t;
    stats.entropy = ent_sum / t;
    stats.clip_fraction = clip_sum / t;
    stats.loss /= updates as f64;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lmmhost_model::processor::{Message, Part};
    use lmmhost_model::sampling::{SamplingParams, SeededRng};

    use super::super::logprobs::rows_logprobs;
    use super::*;
    use crate::rl::kl::Kl;
    use crate::rl::policy_loss::{ClipConfig, LossAggregation};
    use crate::train::experiment::{Grpo, ModelInit, ModelSection, Optim, Rollout, Sft};
    use crate::train::rollout::{roll_out, RolloutConfig};

    fn policy(workers: usize, seed: u64) -> Policy {
        let section = ModelSection {
            init: ModelInit::Random,
            workers,
            ..ModelSection::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/char-qwen2"),
            )
        };
        let p = Policy::load(&section, None, seed).unwrap();
        p.set_trainable(false, false);
        p
    }

    fn grads(p: &Policy) -> Vec<Tensor> {
        p.tensors().iter().map(|t| t.grad().copy()).collect()
    }

    fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }

    /// The update on workers (micro-batches on their own threads, gradients
    /// from `run_backward`, summed in micro-batch order) gives the gradients
    /// of plain `backward()` accumulated over the micro-batches in turn.
    #[test]
    fn worker_gradients_equal_serial_backward() {
        tch::set_num_threads(2);
        let base = policy(1, 3);
        let convs: Vec<_> = [
            "Compute 1+2.",
            "Compute 7-5.",
            "Compute 3*3.",
            "Compute 9-1.",
        ]
        .iter()
        .map(|q| {
            vec![Message {
                role: "user".into(),
                parts: vec![Part::Text(q.to_string())],
            }]
        })
        .collect();
        let batch = base.processor.prepare(&convs, true).unwrap();
        let cfg = RolloutConfig {
            samples_per_prompt: 4,
            sampling: SamplingParams::default(),
            max_new_tokens: 10,
            min_new_tokens: 0,
            blocked_token_ids: Vec::new(),
            kv_cache_tokens: None,
        };
        let rows = roll_out(&base, &batch, &cfg, &mut SeededRng::new(1), 0).unwrap();
        let advantages: Vec<f64> = (0..rows.len()).map(|i| (i % 3) as f64 - 0.8).collect();
        // A different network as the reference, so that the KL term has a gradient.
        let reference = policy(1, 4);
        let pad = base.processor.tokenizer.pad_id;
        let ref_lp = rows_logprobs(reference.lm(), &rows, 5, pad, false, Device::Cpu, 2).unwrap();
        // Two workers with one libtorch thread each vs one with two: the
        // same numbers up to the kernels' summation order.
        let serial = rows_logprobs(reference.lm(), &rows, 5, pad, false, Device::Cpu, 1).unwrap();
        for (a, b) in ref_lp.iter().zip(&serial) {
            assert_eq!(a.len(), b.len());
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
        }
        let settings = StageSettings {
            rollout: Rollout::default(),
            optim: Optim {
                micro_batch_size: 5,
                grad_clip: 0.0,
                ..Optim::default()
            },
            grpo: Grpo {
                kl: Kl {
                    coef: 0.04,
                    ..Kl::default()
                },
                ..Grpo::default()
            },
            sft: Sft::default(),
        };
        let inputs = UpdateInputs {
            rows: &rows,
            advantages: &advantages,
            old_logprobs: None,
            kl: Some(LossKl {
                ref_logprobs: &ref_lp,
                coef: settings.grpo.kl.coef,
                estimator: settings.grpo.kl.estimator,
            }),
            lr: 0.0,
            entropy_coef: 0.01,
        };
        let mut runs = Vec::new();
        for workers in [1, 2, 3] {
            let p = policy(workers, 3);
            assert_eq!(p.workers, workers.min(2));
            let mut opt = AdamW::new(&p.tensors(), [0.9, 0.999], 1e-8, 0.0);
            let stats = update(&p, &mut opt, &settings, &inputs).unwrap();
            runs.push((grads(&p), stats));
        }

        // Plain backward over the same micro-batches, one after the other.
        let p = policy(1, 3);
        p.zero_grad();
        let norm = BatchNorm {
            tokens: rows.iter().map(|r| r.response.len()).sum::<usize>() as f64,
            sequences: rows.len() as f64,
            constant_length: 512.0,
        };
        let clip = ClipConfig {
            low: 0.2,
            high: 0.2,
            dual: None,
        };
        for (i, part) in rows.chunks(5).enumerate() {
            let refs: Vec<&Row> = part.iter().collect();
            let sb = shared_prompt_batch(&refs, pad, false, Device::Cpu);
            let (lp, ent) = shared_response_stats(p.lm(), &sb, Entropy::Differentiable).unwrap();
            let mask = &sb.response_mask;
            let adv: Vec<f32> = advantages[i * 5..i * 5 + part.len()]
                .iter()
                .map(|&a| a as f32)
                .collect();
            let (pg, _) = clipped_policy_loss(&lp, &lp.detach(), &Tensor::from_slice(&adv), clip);
            let v: Vec<&[f32]> = (i * 5..i * 5 + part.len())
                .map(|j| ref_lp[j].as_slice())
                .collect();
            let kl = kl_estimate(
                &lp,
                &padded(&v, sb.response_len(), Device::Cpu),
                KlEstimator::K3,
            );
            let agg = LossAggregation::TokenMean;
            let loss = aggregate(&(pg + kl * 0.04), mask, agg, norm)
                - aggregate(&ent.unwrap(), mask, agg, norm) * 0.01;
            loss.backward();
        }
        let plain = grads(&p);
        let scale = plain
            .iter()
            .map(|g| g.abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        assert!(scale > 0.0);
        for (w, (g, stats)) in runs.iter().enumerate() {
            let d = max_diff(g, &plain);
            assert!(
                d <= 1e-5 * scale,
                "{} workers: gradients differ by {d} (scale {scale})",
                w + 1
            );
            assert!((stats.loss - runs[0].1.loss).abs() < 1e-6);
            assert!((stats.kl - runs[0].1.kl).abs() < 1e-6 * runs[0].1.kl);
            assert!(stats.kl > 0.0);
        }
    }
}
