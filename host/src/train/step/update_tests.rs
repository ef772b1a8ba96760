//! Tests of the GRPO update on the tiny random char-qwen2: workers against
//! plain backward, the sampling temperature in every log-prob, and several
//! updates per batch against a hand computation of the clipped loss.

use std::path::Path;

use lmmhost_model::memory::{rss_follows_live_memory, run_probe};
use lmmhost_model::processor::{Message, Part};
use lmmhost_model::sampling::{SamplingParams, SeededRng};

use super::super::logprobs::{rows_logprobs, LogprobPass};
use super::*;
use crate::rl::kl::Kl;
use crate::rl::policy_loss::{ppo_clip_loss, ClipConfig, LossAggregation};
use crate::rl::schedules::{EntropyBonus, LrDecay};
use crate::train::experiment::{Grpo, ModelInit, ModelSection, Optim, Rollout, Sft};
use crate::train::memory_plan::{PlanInputs, Shape};
use crate::train::param_count::param_count;
use crate::train::policy::{Freeze, Placement, Reference};
use crate::train::rollout::{roll_out, RolloutConfig};

/// A world of one: the update as a single process runs it.
pub(super) fn one_rank() -> DataParallel {
    DataParallel::single(tch::Device::Cpu)
}

fn policy(workers: usize, seed: u64) -> Policy {
    policy_in("f32", workers, seed)
}

fn policy_in(dtype: &str, workers: usize, seed: u64) -> Policy {
    let section = ModelSection {
        init: ModelInit::Random,
        workers,
        dtype: dtype.into(),
        ..ModelSection::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/char-qwen2"),
        )
    };
    let p = Policy::load(&section, None, seed).unwrap();
    p.set_trainable(&Freeze::default());
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

/// The L2 norm of `a - b` over all tensors together.
fn l2_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt()
}

/// `n` completions of each of the four prompts, sampled at `temperature`.
fn rollout(p: &Policy, n: usize, temperature: f64, max_new_tokens: usize) -> Vec<Row> {
    rollout_at_least(p, n, temperature, max_new_tokens, 0)
}

/// [`rollout`] with at least `min_new_tokens` per completion.
fn rollout_at_least(
    p: &Policy,
    n: usize,
    temperature: f64,
    max_new_tokens: usize,
    min_new_tokens: usize,
) -> Vec<Row> {
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
    let batch = p.processor.prepare(&convs, true).unwrap();
    let cfg = RolloutConfig {
        samples_per_prompt: n,
        sampling: SamplingParams {
            temperature,
            ..SamplingParams::default()
        },
        max_new_tokens,
        min_new_tokens,
        blocked_token_ids: Vec::new(),
        kv_cache_tokens: None,
    };
    roll_out(p, &batch, &cfg, &mut SeededRng::new(1), 0, None).unwrap()
}

/// A constant learning rate and no entropy bonus.
fn constant(lr: f64, entropy: f64) -> RateSchedule {
    RateSchedule {
        lr,
        decay: LrDecay::Constant,
        warmup: 0,
        total: 0,
        min_ratio: 0.0,
        entropy: EntropyBonus {
            coef: entropy,
            ..EntropyBonus::default()
        },
    }
}

/// Advantages cycling through -1.5, -0.5, 0.5, 1.5 over the rows, per token.
fn cycling_advantages(rows: &[Row]) -> Vec<Vec<f32>> {
    let adv_seq: Vec<f64> = (0..rows.len()).map(|i| (i % 4) as f64 - 1.5).collect();
    per_token(rows, &adv_seq)
}

/// An update of `rows` against their current log-probs, without KL.
fn plain_inputs<'a>(
    rows: &'a [Row],
    adv: &'a [Vec<f32>],
    rates: &'a RateSchedule,
) -> UpdateInputs<'a> {
    UpdateInputs {
        rows,
        advantages: adv,
        old_logprobs: None,
        kl: None,
        temperature: 1.0,
        rates,
    }
}

/// Each row's advantage on each of its tokens.
fn per_token(rows: &[Row], adv: &[f64]) -> Vec<Vec<f32>> {
    rows.iter()
        .zip(adv)
        .map(|(r, &a)| vec![a as f32; r.response.len()])
        .collect()
}

fn settings(micro_batch_size: usize, updates_per_batch: usize, kl: Kl) -> StageSettings {
    StageSettings {
        rollout: Rollout::default(),
        optim: Optim {
            micro_batch_size,
            updates_per_batch,
            grad_clip: 0.0,
            ..Optim::default()
        },
        grpo: Grpo {
            kl,
            ..Grpo::default()
        },
        sft: Sft::default(),
    }
}

/// The update on workers (micro-batches on their own threads, gradients
/// from `run_backward`, summed in micro-batch order) gives the gradients
/// of plain `backward()` accumulated over the micro-batches in turn.
#[test]
fn worker_gradients_equal_serial_backward() {
    tch::set_num_threads(2);
    let base = policy(1, 3);
    let rows = rollout(&base, 4, 1.0, 10);
    let advantages: Vec<f64> = (0..rows.len()).map(|i| (i % 3) as f64 - 0.8).collect();
    let adv_tokens = per_token(&rows, &advantages);
    // A different network as the reference, so that the KL term has a gradient.
    let reference = policy(1, 4);
    let pass = |workers| LogprobPass {
        workers,
        ..LogprobPass::of(&base, 5, 1.0)
    };
    let ref_lp = rows_logprobs(reference.lm(), &rows, &pass(2)).unwrap();
    // Two workers with one libtorch thread each vs one with two: the
    // same numbers up to the kernels' summation order.
    let serial = rows_logprobs(reference.lm(), &rows, &pass(1)).unwrap();
    for (a, b) in ref_lp.iter().zip(&serial) {
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
    let kl = Kl {
        coef: 0.04,
        ..Kl::default()
    };
    let settings = settings(5, 1, kl);
    let rates = constant(0.0, 0.01);
    let inputs = UpdateInputs {
        rows: &rows,
        advantages: &adv_tokens,
        old_logprobs: None,
        kl: Some(LossKl {
            ref_logprobs: &ref_lp,
            coef: settings.grpo.kl.coef,
            estimator: settings.grpo.kl.estimator,
        }),
        temperature: 1.0,
        rates: &rates,
    };
    let mut runs = Vec::new();
    // Then with activation checkpointing (the recomputing backward).
    for (workers, checkpointing) in [(1, false), (2, false), (3, false), (1, true), (2, true)] {
        let mut p = policy(workers, 3);
        p.activation_checkpointing = checkpointing;
        assert_eq!(p.workers, workers.min(2));
        let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.0);
        let stats = update(&one_rank(), &p, &mut opt, &settings, &inputs).unwrap();
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
    let pad = base.processor.tokenizer.pad_id;
    for (i, part) in rows.chunks(5).enumerate() {
        let refs: Vec<&Row> = part.iter().collect();
        let sb = shared_prompt_batch(&refs, pad, false, Device::Cpu);
        let (lp, ent) = shared_response_stats(p.lm(), &sb, Entropy::Differentiable, 1.0).unwrap();
        let mask = &sb.response_mask;
        let adv: Vec<f32> = advantages[i * 5..i * 5 + part.len()]
            .iter()
            .map(|&a| a as f32)
            .collect();
        let adv = Tensor::from_slice(&adv).unsqueeze(-1);
        let (pg, _) = ppo_clip_loss(&lp, &lp.detach(), &adv, clip);
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
    for (run, (g, stats)) in runs.iter().enumerate() {
        let d = max_diff(g, &plain);
        assert!(
            d <= 1e-5 * scale,
            "run {run}: gradients differ by {d} (scale {scale})"
        );
        assert!((stats.loss - runs[0].1.loss).abs() < 1e-6);
        assert!((stats.kl - runs[0].1.kl).abs() < 1e-6 * runs[0].1.kl);
        assert!(stats.kl > 0.0);
    }
}

/// Sampling at temperature 0.7: the log-prob the trainer computes for
/// each sampled token is the one the rollout drew it with, so the first
/// update's ratio against the rollout policy is 1 (up to float rounding of
/// two different kernels); at temperature 1 the two differ.
#[test]
fn log_probs_are_taken_at_the_sampling_temperature() {
    tch::set_num_threads(1);
    let p = policy(1, 7);
    let rows = rollout(&p, 3, 0.7, 8);
    let at = |t: f64| rows_logprobs(p.lm(), &rows, &LogprobPass::of(&p, 4, t)).unwrap();
    let (trained, untempered) = (at(0.7), at(1.0));
    let (mut same, mut apart) = (0f32, 0f32);
    for ((row, lp), lp1) in rows.iter().zip(&trained).zip(&untempered) {
        assert_eq!(row.logprobs.len(), row.response.len());
        for ((&r, &x), &y) in row.logprobs.iter().zip(lp).zip(lp1) {
            same = same.max((r - x).abs());
            apart = apart.max((r - y).abs());
        }
    }
    assert!(
        same < 1e-5,
        "trainer vs rollout log-probs at T = 0.7: {same}"
    );
    assert!(apart > 1e-2, "at T = 1 they should differ, by {apart}");

    // Two updates against the rollout's log-probs: the first one's ratio is 1.
    let s = settings(4, 2, Kl::default());
    let adv = per_token(&rows, &vec![0.5; rows.len()]);
    let rates = constant(1e-3, 0.0);
    let inputs = UpdateInputs {
        rows: &rows,
        advantages: &adv,
        old_logprobs: Some(&trained),
        kl: None,
        temperature: 0.7,
        rates: &rates,
    };
    let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.0);
    let stats = update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
    assert_eq!(stats.updates.len(), 2);
    let first = &stats.updates[0];
    assert!(first.ratio_max_dev < 1e-5, "{first:?}");
    assert_eq!(first.clip_fraction, 0.0);
    assert!(stats.updates[1].ratio_max_dev > first.ratio_max_dev);
}

/// `updates_per_batch = 2` over 2 prompts x 4 completions: the first
/// update trains on the first group, the second on the other with its
/// ratio against the rollout policy's log-probs, which the first update
/// has moved away from, so the clip engages. The second update's loss is
/// recomputed by hand: the policy after one update (the same update run
/// alone), its log-probs of the second group, and the clipped surrogate's
/// token mean in f64.
#[test]
fn several_updates_per_batch_clip_and_match_a_hand_computation() {
    tch::set_num_threads(1);
    let base = policy(1, 11);
    let rows: Vec<Row> = rollout(&base, 4, 1.0, 6)
        .into_iter()
        .filter(|r| r.group < 2)
        .collect();
    assert_eq!(rows.len(), 8);
    let adv_seq = [1.2, -0.4, 0.7, -1.5, 0.9, -0.9, 1.4, -1.1];
    let adv = per_token(&rows, &adv_seq);
    let old = rows_logprobs(base.lm(), &rows, &LogprobPass::of(&base, 8, 1.0)).unwrap();
    let rates = constant(0.05, 0.0);
    let input = |rows, adv, old| UpdateInputs {
        rows,
        advantages: adv,
        old_logprobs: Some(old),
        kl: None,
        temperature: 1.0,
        rates: &rates,
    };

    let p = policy(1, 11);
    let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.0);
    let s2 = settings(8, 2, Kl::default());
    let stats = update(&one_rank(), &p, &mut opt, &s2, &input(&rows, &adv, &old)).unwrap();
    assert_eq!(stats.updates.len(), 2);
    assert_eq!(opt.step, 2);
    let second = &stats.updates[1];
    assert!(second.clip_fraction > 0.0, "{second:?}");

    // The same first update alone, then the second group's log-probs.
    let q = policy(1, 11);
    let mut opt1 = AdamW::new([0.9, 0.999], 1e-8, 0.0);
    let s1 = settings(8, 1, Kl::default());
    let one = update(
        &one_rank(),
        &q,
        &mut opt1,
        &s1,
        &input(&rows[..4], &adv[..4], &old[..4]),
    )
    .unwrap();
    assert!((one.loss - stats.updates[0].loss).abs() < 1e-6);
    let moved = rows_logprobs(q.lm(), &rows[4..], &LogprobPass::of(&q, 8, 1.0)).unwrap();
    let (mut sum, mut clipped, mut tokens) = (0.0f64, 0usize, 0usize);
    for (i, lp) in moved.iter().enumerate() {
        let a = adv_seq[4 + i];
        for (t, &x) in lp.iter().enumerate() {
            let rho = (f64::from(x) - f64::from(old[4 + i][t])).exp();
            let unclipped = -a * rho;
            let bounded = -a * rho.clamp(0.8, 1.2);
            sum += unclipped.max(bounded);
            clipped += usize::from(bounded > unclipped);
            tokens += 1;
        }
    }
    let hand = sum / tokens as f64;
    assert!(
        (second.loss - hand).abs() < 1e-4 * hand.abs().max(1.0),
        "second update's loss {} vs {hand} by hand",
        second.loss
    );
    assert!((second.clip_fraction - clipped as f64 / tokens as f64).abs() < 1e-9);
}

/// bf16 with f32 master weights trains like f32: one update at the papers'
/// lr 1e-6 moves the (master) weights as the f32 run moves its weights, to
/// within a small relative difference of the update, while pure bf16 (the
/// weights and moments themselves in bf16, as `dtype = "bf16"` used to
/// train) leaves almost every weight where it was.
#[test]
fn bf16_with_master_weights_moves_like_f32() {
    tch::set_num_threads(2);
    let base = policy(1, 5);
    let rows = rollout(&base, 4, 1.0, 8);
    let adv = cycling_advantages(&rows);
    let rates = constant(1e-6, 0.0);
    let inputs = plain_inputs(&rows, &adv, &rates);
    let s = settings(4, 1, Kl::default());
    // The weights each run trains, in f32, before and after three updates.
    let run = |dtype: &str| {
        let p = policy_in(dtype, 1, 5);
        let mut opt =
            AdamW::new([0.9, 0.999], 1e-8, 0.0).with_master_weights(p.precision.master_weights());
        let before: Vec<Tensor> = p
            .tensors()
            .iter()
            .map(|t| t.to_kind(Kind::Float).copy())
            .collect();
        for _ in 0..3 {
            update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
        }
        let after: Vec<Tensor> = p
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| opt.trained_weight(i, t).to_kind(Kind::Float))
            .collect();
        let delta: Vec<Tensor> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        (p, delta)
    };
    let (_, full) = run("f32");
    let (mixed_policy, mixed) = run("bf16");
    let (_, pure) = run("bf16-pure");
    assert_eq!(mixed_policy.tensors()[0].kind(), Kind::BFloat16);
    let norm = |d: &[Tensor]| {
        d.iter()
            .map(|t| t.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    };
    let diff = |d: &[Tensor]| {
        let e: Vec<Tensor> = d.iter().zip(&full).map(|(a, b)| a - b).collect();
        norm(&e) / norm(&full)
    };
    let moved = |d: &[Tensor]| {
        let (n, total) = d.iter().fold((0i64, 0i64), |(n, total), t| {
            (
                n + t.ne(0.0).sum(Kind::Int64).int64_value(&[]),
                total + t.numel() as i64,
            )
        });
        n as f64 / total as f64
    };
    assert!(moved(&full) > 0.9, "f32 moved {}", moved(&full));
    let (mixed_diff, pure_diff) = (diff(&mixed), diff(&pure));
    eprintln!(
        "relative difference of the update from f32's: mixed {mixed_diff:.3}, pure {pure_diff:.3}; \
         moved: f32 {:.3}, mixed {:.3}, pure {:.4}",
        moved(&full),
        moved(&mixed),
        moved(&pure)
    );
    assert!(mixed_diff < 0.25, "bf16 + f32 masters vs f32: {mixed_diff}");
    assert!(moved(&mixed) > 0.9, "mixed moved {}", moved(&mixed));
    assert!(pure_diff > 0.9, "pure bf16 vs f32: {pure_diff}");
    assert!(moved(&pure) < 0.05, "pure bf16 moved {}", moved(&pure));
}

/// Activation checkpointing changes where the activations live, not the
/// update: two optimizer updates per batch (clipped ratio against old
/// log-probs, KL in the loss, entropy bonus) leave the same weights with it
/// and without, in f32 and in mixed bf16.
#[test]
fn activation_checkpointing_gives_the_same_update() {
    tch::set_num_threads(2);
    let base = policy(1, 8);
    let rows = rollout(&base, 3, 1.0, 8);
    let adv = cycling_advantages(&rows);
    let old = rows_logprobs(base.lm(), &rows, &LogprobPass::of(&base, 6, 1.0)).unwrap();
    let reference = policy(1, 9);
    let ref_lp = rows_logprobs(reference.lm(), &rows, &LogprobPass::of(&base, 6, 1.0)).unwrap();
    let kl = Kl {
        coef: 0.05,
        ..Kl::default()
    };
    let s = settings(5, 2, kl);
    let rates = constant(1e-3, 0.01);
    let inputs = UpdateInputs {
        rows: &rows,
        advantages: &adv,
        old_logprobs: Some(&old),
        kl: Some(LossKl {
            ref_logprobs: &ref_lp,
            coef: 0.05,
            estimator: s.grpo.kl.estimator,
        }),
        temperature: 1.0,
        rates: &rates,
    };
    for dtype in ["f32", "bf16"] {
        let run = |checkpointing: bool| {
            let mut p = policy_in(dtype, 1, 8);
            p.activation_checkpointing = checkpointing;
            let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.0)
                .with_master_weights(p.precision.master_weights());
            let stats = update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
            let weights: Vec<Tensor> = p
                .tensors()
                .iter()
                .enumerate()
                .map(|(i, t)| opt.trained_weight(i, t).to_kind(Kind::Float))
                .collect();
            (weights, stats)
        };
        let (plain, plain_stats) = run(false);
        let (ckpt, ckpt_stats) = run(true);
        let before = policy_in(dtype, 1, 8).tensors();
        let step = max_diff(&plain, &before);
        let worst = max_diff(&ckpt, &plain);
        let relative = l2_diff(&ckpt, &plain) / l2_diff(&plain, &before);
        eprintln!(
            "{dtype}: checkpointed weights differ by {relative:e} of the update (L2), \
             at most {worst:e} where the update moved a weight by at most {step:e}"
        );
        // The recomputed forward rounds like the plain one but not always in
        // the same order, and Adam's first step is about lr * sign(gradient):
        // a gradient near zero whose sign rounding flips moves its weight by
        // up to 2 lr. So the largest single difference may approach the step
        // on any CPU; the update as a whole must agree to rounding (measured
        // on an AMD EPYC under four kernel choices: f32 4.6e-7, bf16 2.8e-5
        // of the update; another CPU's largest single difference was 7 times
        // this one's). A recomputation that is wrong differs by order 1.
        let tol = if dtype == "f32" { 1e-3 } else { 0.05 };
        assert!(
            step > 1e-4,
            "{dtype}: the update moved the weights by {step} only"
        );
        assert!(
            relative <= tol,
            "{dtype}: the checkpointed update differs by {relative} of the update"
        );
        assert_eq!(plain_stats.updates.len(), 2);
        for (a, b) in ckpt_stats.updates.iter().zip(&plain_stats.updates) {
            eprintln!(
                "{dtype}: loss {:e} vs {:e}, grad norm {:e} vs {:e}",
                a.loss, b.loss, a.grad_norm, b.grad_norm
            );
            assert!(
                (a.loss - b.loss).abs() <= 1e-5 * b.loss.abs().max(1.0),
                "{a:?} vs {b:?}"
            );
            assert!(
                (a.grad_norm - b.grad_norm).abs() <= 1e-3 * b.grad_norm,
                "{a:?} vs {b:?}"
            );
        }
        assert!((ckpt_stats.kl - plain_stats.kl).abs() <= 1e-5 * plain_stats.kl.max(1e-9));
    }
}

/// A random Qwen2 with char-qwen2's tokenizer, large enough (about 12 M
/// parameters, 48 MB of f32 gradient) that one gradient copy dwarfs the
/// allocator's noise.
fn mid_policy(dir: &Path, dtype: &str) -> Policy {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/char-qwen2");
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["hidden_size"] = 512.into();
    config["intermediate_size"] = 1536.into();
    config["num_hidden_layers"] = 4.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let section = ModelSection {
        init: ModelInit::Random,
        dtype: dtype.into(),
        ..ModelSection::new(dir)
    };
    let p = Policy::load(&section, None, 2).unwrap();
    p.set_trainable(&Freeze::default());
    p
}

/// Resident set size and its peak (`VmRSS`, `VmHWM`) in bytes.
fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = s.lines().find(|l| l.starts_with(name)).unwrap();
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kb * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What `lmmhost plan` assumes for an f32 update of `rows` (groups of 4)
/// on `p` in micro-batches of `micro` rows.
fn plan_of(p: &Policy, rows: &[Row], micro: usize, chunk_tokens: Option<usize>) -> PlanInputs {
    let config = &p.model.config;
    let params = param_count(config).unwrap();
    let prompt = rows.iter().map(|r| r.prompt.len()).max().unwrap() as u64;
    let response = rows.iter().map(|r| r.response.len()).max().unwrap() as u64;
    PlanInputs {
        params,
        adapter_params: 0,
        trainable: params.total(),
        precision: p.precision,
        reference_bytes: None,
        micro_batch_size: micro as u64,
        workers: p.workers as u64,
        update_rows: rows.len() as u64,
        row_tokens: prompt + response,
        prompt_tokens: prompt,
        response_tokens: response,
        group_size: 4,
        activation_checkpointing: p.activation_checkpointing,
        logprob_chunk_tokens: chunk_tokens.map(|t| t as u64),
        kv_tokens: 0,
        shape: Shape::of(&config.text),
        vision: None,
        ranks: 1,
        zero_stage: 0,
    }
}

/// The planner's prediction against a measured peak rise: within 15 %.
pub(super) fn assert_planned(what: &str, planned: f64, measured: f64) {
    let err = planned / measured - 1.0;
    eprintln!(
        "{what}: planned {:.1} MB, measured {:.1} MB ({:+.1} %)",
        planned / 1e6,
        measured / 1e6,
        100.0 * err
    );
    assert!(
        err.abs() <= 0.15,
        "{what}: planned {planned} B, measured {measured} B"
    );
}

/// Run by `logprob_pass_peak_follows_the_chunk_budget` in a process of its
/// own: the old-policy pass over 16 rows of 128 response tokens, in one
/// chunk or under a `grpo.logprob_chunk_tokens` budget of
/// `LMMHOST_PROBE_CHUNK_ROWS` rows' tokens, printing the peak rise;
/// checks that the log-probs equal those of chunks of 3 rows.
#[test]
#[ignore = "a child process of logprob_pass_peak_follows_the_chunk_budget"]
fn logprob_peak_memory_probe() {
    rss_follows_live_memory();
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let p = mid_policy(dir.path(), "f32");
    let rows = rollout_at_least(&p, 4, 1.0, 128, 128);
    // A budget of `LMMHOST_PROBE_CHUNK_ROWS` rows' padded tokens.
    let longest = rows
        .iter()
        .map(|r| r.prompt.len() + r.response.len())
        .max()
        .unwrap();
    let budget: Option<usize> = std::env::var("LMMHOST_PROBE_CHUNK_ROWS")
        .ok()
        .map(|v| v.parse::<usize>().unwrap() * longest);
    let pass = LogprobPass {
        chunk_tokens: budget,
        ..LogprobPass::of(&p, rows.len(), 1.0)
    };
    let reference = rows_logprobs(p.lm(), &rows, &LogprobPass::of(&p, 3, 1.0)).unwrap();
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (before, _) = rss();
    let lp = rows_logprobs(p.lm(), &rows, &pass).unwrap();
    let (_, peak) = rss();
    assert_eq!(lp.len(), reference.len());
    for (a, b) in lp.iter().zip(&reference) {
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4),
            "{a:?} vs {b:?}"
        );
    }
    let planned = plan_of(&p, &rows, rows.len(), budget).logprob_pass_bytes(rows.len() as u64);
    println!(
        "probe micro_batch=0 rise={} grad_bytes=0 planned={planned}",
        peak - before
    );
}

/// The old-policy / reference pass over 16 rows of 128 response tokens: with
/// `grpo.logprob_chunk_tokens` at two rows' tokens its peak rise is a
/// fraction of the one-chunk pass's, and the log-probs are the same.
#[test]
fn logprob_pass_peak_follows_the_chunk_budget() {
    let probe = |rows: Option<usize>| {
        let env: Vec<(&str, String)> = rows
            .map(|r| ("LMMHOST_PROBE_CHUNK_ROWS", r.to_string()))
            .into_iter()
            .collect();
        let (rise, _, planned) = probe_peak_of("logprob_peak_memory_probe", &env);
        assert_planned(
            &format!("log-prob pass, chunks of {rows:?} rows"),
            planned,
            rise,
        );
        rise
    };
    let whole = probe(None);
    let chunked = probe(Some(2));
    eprintln!(
        "log-prob pass peak rise, 16 rows x 128 response tokens: {:.1} MB in one chunk, {:.1} MB in \
         chunks of two rows' tokens",
        whole / 1e6,
        chunked / 1e6
    );
    assert!(
        chunked < 0.35 * whole,
        "chunked +{chunked} B, whole +{whole} B"
    );
}

/// Run by `update_memory_does_not_grow_with_micro_batches` in a process of
/// its own: one update of 16 rows in micro-batches of
/// `LMMHOST_PROBE_MICRO_BATCH` rows, printing how far the resident size rose
/// above where it stood before the update.
#[test]
#[ignore = "a child process of update_memory_does_not_grow_with_micro_batches"]
fn update_peak_memory_probe() {
    rss_follows_live_memory();
    tch::set_num_threads(1);
    let micro: usize = std::env::var("LMMHOST_PROBE_MICRO_BATCH")
        .expect("LMMHOST_PROBE_MICRO_BATCH")
        .parse()
        .unwrap();
    let var = |name: &str, default: usize| -> usize {
        std::env::var(name).map_or(default, |v| v.parse().unwrap())
    };
    let tokens = var("LMMHOST_PROBE_TOKENS", 8);
    // Benchmarks only (docs/performance.md): another dtype, or char-qwen2 itself.
    let dtype = std::env::var("LMMHOST_PROBE_DTYPE").unwrap_or_else(|_| "f32".into());
    let dir = tempfile::tempdir().unwrap();
    let mut p = if std::env::var("LMMHOST_PROBE_TINY").is_ok() {
        policy_in(&dtype, 1, 2)
    } else {
        mid_policy(dir.path(), &dtype)
    };
    p.activation_checkpointing = var("LMMHOST_PROBE_CHECKPOINTING", 0) == 1;
    let rows = rollout_at_least(&p, 4, 1.0, tokens, tokens);
    assert_eq!(rows.len(), 16);
    let adv = cycling_advantages(&rows);
    let rates = constant(1e-4, 0.0);
    let inputs = plain_inputs(&rows, &adv, &rates);
    let mut opt =
        AdamW::new([0.9, 0.999], 1e-8, 0.0).with_master_weights(p.precision.master_weights());
    let s = settings(micro, 1, Kl::default());
    // Moments and `.grad` exist from a first update; the measured one then
    // allocates only what an update needs in flight.
    update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (before, _) = rss();
    update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
    let (_, peak) = rss();
    let grad_bytes: i64 = p.tensors().iter().map(|t| t.numel() as i64 * 4).sum();
    let planned = plan_of(&p, &rows, micro, None).plan().update;
    println!(
        "probe micro_batch={micro} rise={} grad_bytes={grad_bytes} planned={planned}",
        peak - before
    );
}

/// Runs [`update_peak_memory_probe`] in a child process with `env` set;
/// returns the update's peak rise, one gradient copy and the planner's
/// prediction of the rise, in bytes.
fn probe_peak(env: &[(&str, String)]) -> (f64, f64, f64) {
    probe_peak_of("update_peak_memory_probe", env)
}

/// Runs the probe test `probe` in a child process with `env` set; returns
/// the peak rise it printed, one gradient copy and the planned rise.
fn probe_peak_of(probe: &str, env: &[(&str, String)]) -> (f64, f64, f64) {
    let v = run_probe(
        &format!("train::step::update::tests::{probe}"),
        env,
        "probe micro_batch=",
    );
    (v["rise"], v["grad_bytes"], v["planned"])
}

/// Activation checkpointing at a long sequence (16 rows of 8 prompt + 128
/// response tokens in one micro-batch, 4 layers of hidden 512): the
/// update's peak rise without and with it. With it only the layers' inputs
/// and one layer's activations are alive, so the rise falls by more than
/// half of the activations (the rise beyond the gradient copy).
#[test]
fn activation_checkpointing_lowers_the_update_peak() {
    let at = |ckpt: u8| {
        probe_peak(&[
            ("LMMHOST_PROBE_MICRO_BATCH", "16".into()),
            ("LMMHOST_PROBE_TOKENS", "128".into()),
            ("LMMHOST_PROBE_CHECKPOINTING", ckpt.to_string()),
        ])
    };
    let (plain, grad, plain_plan) = at(0);
    let (ckpt, _, ckpt_plan) = at(1);
    assert_planned("update, 16 x 128 tokens", plain_plan, plain);
    assert_planned(
        "update with checkpointing, 16 x 128 tokens",
        ckpt_plan,
        ckpt,
    );
    eprintln!(
        "peak rise over the update, 16 rows x 128 response tokens: {:.1} MB without activation \
         checkpointing, {:.1} MB with; one gradient copy {:.1} MB",
        plain / 1e6,
        ckpt / 1e6,
        grad / 1e6
    );
    assert!(
        ckpt - grad < 0.5 * (plain - grad),
        "checkpointing: +{ckpt} B, plain: +{plain} B (one gradient copy {grad} B)"
    );
}

/// The same 16 rows in one micro-batch and in 16: with 16 the update's
/// peak rises by at most what it does with one (whose 16 rows' activations
/// outweigh one row's) plus a quarter of a gradient copy, and by less than
/// two gradient copies in all (one in flight, plus one row's activations);
/// keeping a copy per micro-batch until the sum, as the update used to,
/// would add 15 copies. Each size runs in a child process so that one's
/// freed memory cannot hide the other's.
#[test]
fn update_memory_does_not_grow_with_micro_batches() {
    let probe = |micro: usize| probe_peak(&[("LMMHOST_PROBE_MICRO_BATCH", micro.to_string())]);
    // By micro-batch size: 16 rows in one micro-batch, and one row in each of 16.
    let (one, grad, one_plan) = probe(16);
    let (sixteen, _, sixteen_plan) = probe(1);
    assert_planned("update, 1 micro-batch of 16 rows", one_plan, one);
    assert_planned("update, 16 micro-batches of 1 row", sixteen_plan, sixteen);
    eprintln!(
        "peak rise over the update: 16 rows in 1 micro-batch {:.1} MB, in 16 micro-batches of 1 row \
         {:.1} MB; one gradient copy {:.1} MB",
        one / 1e6,
        sixteen / 1e6,
        grad / 1e6
    );
    assert!(
        sixteen < one + 0.25 * grad && sixteen < 2.0 * grad,
        "1 micro-batch: +{one} B, 16: +{sixteen} B (one gradient copy {grad} B)"
    );
}

/// `grpo.kl.reference_dtype = "bf16"`: the reference is loaded in bf16 and
/// its log-probs stay within bf16's rounding of the f32 reference's; a
/// device that does not parse is an error naming the key.
#[test]
fn reference_in_bf16_gives_the_f32_log_probs_to_bf16_precision() {
    tch::set_num_threads(2);
    let section = ModelSection {
        init: ModelInit::Random,
        ..ModelSection::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/char-qwen2"),
        )
    };
    let p = policy(1, 9);
    let rows = rollout(&p, 2, 1.0, 8);
    let load = |dtype: Option<&str>| {
        let place = Placement {
            device: Some("cpu".into()),
            dtype: dtype.map(String::from),
        };
        Reference::initial(&section, &place, 9).unwrap()
    };
    let (full, half) = (load(None), load(Some("bf16")));
    assert_eq!(full.model.model.named_parameters()[0].1.kind(), Kind::Float);
    assert_eq!(
        half.model.model.named_parameters()[0].1.kind(),
        Kind::BFloat16
    );
    let pass = LogprobPass::of(&p, 4, 1.0);
    let a = rows_logprobs(full.lm(), &rows, &pass).unwrap();
    let b = rows_logprobs(half.lm(), &rows, &pass).unwrap();
    let (mut worst, mut any) = (0f32, 0f32);
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            worst = worst.max((u - v).abs() / u.abs().max(1.0));
            any = any.max((u - v).abs());
        }
    }
    assert!(any > 0.0, "the bf16 reference computed in f32?");
    assert!(worst < 0.05, "bf16 reference log-probs off by {worst}");

    let place = Placement {
        device: Some("tpu".into()),
        dtype: None,
    };
    let err = format!(
        "{:#}",
        Reference::initial(&section, &place, 9).err().unwrap()
    );
    assert!(err.contains("grpo.kl.reference_device"), "{err}");
}
