//! `lmmhost run`: the training loop, top to bottom.
//!
//! Every step: ask the schedule for the plan -> draw prompts by the plan's
//! dataset weights -> (SFT) one supervised step, or (GRPO) roll out n
//! completions per prompt, score them with the reward plugins while the
//! reference/old log-probs are computed, compute advantages, apply PAD or
//! dynamic sampling, update the policy in micro-batches -> log -> evaluate and
//! checkpoint when due -> the step's metrics go to the schedule next time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use lmmhost_model::sampling::{SamplingParams, SeededRng};
use lmmhost_sdk as sdk;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::adamw::AdamW;
use super::checkpoint_store::CheckpointStore;
use super::data::{derive_seed, prompt_conversation, sft_conversation, Mixer};
use super::eval::{evaluate, table, write_records, EvalResult, EvalSettings};
use super::experiment::{Experiment, StageSettings};
use super::grpo::{rows_logprobs, update, UpdateInputs};
use super::plugins::{reward_groups, score_all, CombinedScore, Plugins};
use super::policy::{Policy, Reference};
use super::rollout::{prepare_prompts, roll_out, RolloutConfig, Row};
use super::sft;
use super::state::{self, from_hex, to_hex, SummaryRow, TrainerState};
use crate::metrics::log::{MetricsLog, StepRecord};
use crate::metrics::run_plots::plot_run;
use crate::rl::advantage::advantages;
use crate::rl::dynamic_sampling::informative_groups;
use crate::rl::kl::{kl_estimate, KlPlacement};
use crate::rl::pad;
use crate::rl::schedules::{entropy_coef, learning_rate};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the latest checkpoint.
    pub resume: bool,
    /// Stop after this many steps in total (the schedule may end sooner).
    pub max_steps: Option<u64>,
}

/// What a finished run reports.
pub struct RunSummary {
    pub steps: u64,
    /// What the user was warned about (e.g. plugins changed since the checkpoint).
    pub warnings: Vec<String>,
    pub output_dir: PathBuf,
    pub final_model: PathBuf,
    pub summary: Vec<SummaryRow>,
}

/// Everything the loop carries from step to step.
struct Trainer<'a> {
    exp: &'a Experiment,
    plugins: Plugins,
    policy: Policy,
    reference: Option<Reference>,
    opt: AdamW,
    mixer: Mixer,
    state: TrainerState,
    log: MetricsLog,
    out: PathBuf,
    runtime: tokio::runtime::Runtime,
    bar: ProgressBar,
}

pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    let out = exp
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
    let ckpt_dir = exp
        .checkpoint
        .dir
        .clone()
        .unwrap_or_else(|| out.join("checkpoints"));
    let store = CheckpointStore::new(&ckpt_dir, exp.checkpoint.keep_last);
    let resume_from = if opts.resume {
        let latest = store.latest()?;
        if latest.is_none() {
            eprintln!(
                "--resume: no checkpoint in {}, starting from the beginning",
                ckpt_dir.display()
            );
        }
        latest
    } else {
        None
    };
    if let Some(t) = exp.model.threads {
        tch::set_num_threads(t as i32);
    }

    let plugins = Plugins::start(exp)?;
    let policy = Policy::load(
        &exp.model,
        resume_from.as_ref().map(|d| d.join("model")).as_deref(),
        exp.seed,
    )?;
    let mut opt = new_optimizer(exp, &policy);
    let lens = plugins
        .datasets
        .iter()
        .map(|(k, l)| (k.clone(), l.len()))
        .collect();
    let mut mixer = Mixer::new(exp.seed, lens);
    let mut state = TrainerState::fresh(exp.seed);
    let mut trainer_plugins = plugins;
    let mut warnings = Vec::new();
    if let Some(dir) = &resume_from {
        state = state::load_state(dir)?;
        state::load_optimizer(dir, &policy, &mut opt)?;
        mixer.restore(&state.cursors);
        trainer_plugins
            .schedule
            .load_state(&from_hex(&state.schedule_state)?)
            .context("restoring the schedule plugin's state")?;
        let now = trainer_plugins.hashes();
        for (name, old) in &state.plugin_sha256 {
            match now.get(name) {
                Some(h) if h != old => warnings.push(format!(
                    "plugin {name} changed since the checkpoint: sha256 {old} then, {h} now"
                )),
                None => warnings.push(format!(
                    "plugin {name} of the checkpoint is not in the experiment"
                )),
                _ => {}
            }
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "resumed from {} (step {}, stage {:?})",
            dir.display(),
            state.global_step,
            state.stage
        );
    }
    let log = MetricsLog::open(
        &out,
        exp.logging.tensorboard,
        resume_from.as_ref().map(|_| state.metrics_records),
    )?;
    let bar = progress_bar(exp);
    bar.set_position(state.global_step);
    let mut t = Trainer {
        exp,
        plugins: trainer_plugins,
        policy,
        reference: None,
        opt,
        mixer,
        state,
        log,
        out: out.clone(),
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .context("starting the tokio runtime")?,
        bar,
    };

    let evals_at_boundaries = exp.eval.as_ref().is_some_and(|e| e.at_stage_boundaries);
    if t.state.global_step == 0 && evals_at_boundaries {
        t.evaluate("start")?;
    }
    loop {
        if opts.max_steps.is_some_and(|m| t.state.global_step >= m) {
            break;
        }
        for event in t.plugins.reload_changed(exp) {
            say(&t.bar, &event);
        }
        let Some(plan) = t.next_plan()? else { break };
        let settings = exp.stage_settings(&plan)?;
        if plan.stage != t.state.stage {
            if !t.state.stage.is_empty() {
                if evals_at_boundaries {
                    t.evaluate(&format!("after {}", t.state.stage))?;
                }
                // Each stage starts with fresh optimizer moments and its own warmup,
                // as the papers' stages were separate runs.
                t.opt = new_optimizer(exp, &t.policy);
            }
            say(
                &t.bar,
                format!(
                    "stage {} ({}) from step {}",
                    plan.stage,
                    kind_name(plan.kind),
                    t.state.global_step + 1
                ),
            );
            t.state.stage = plan.stage.clone();
            t.state.stage_step = 0;
        }
        let values = match plan.kind {
            sdk::StageKind::Sft => t.sft_step(&plan, &settings)?,
            sdk::StageKind::Grpo => t.grpo_step(&plan, &settings)?,
        };
        t.state.global_step += 1;
        t.state.stage_step += 1;
        t.finish_step(&plan, values)?;
        if exp
            .eval
            .as_ref()
            .is_some_and(|e| e.every > 0 && t.state.global_step.is_multiple_of(e.every))
        {
            t.evaluate(&format!("step {}", t.state.global_step))?;
        }
        if exp.checkpoint.every > 0 && t.state.global_step.is_multiple_of(exp.checkpoint.every) {
            t.checkpoint(&store)?;
        }
    }
    t.bar.finish_and_clear();
    let finished = opts.max_steps.is_none_or(|m| t.state.global_step < m);
    if finished && evals_at_boundaries && !t.state.stage.is_empty() {
        t.evaluate(&format!("after {}", t.state.stage))?;
    }
    if exp.checkpoint.every == 0 || !t.state.global_step.is_multiple_of(exp.checkpoint.every) {
        t.checkpoint(&store)?;
    }
    let final_model = out.join("final-model");
    if final_model.exists() {
        std::fs::remove_dir_all(&final_model)
            .with_context(|| format!("cannot replace {}", final_model.display()))?;
    }
    t.policy.save(&final_model)?;
    if exp.logging.plots {
        let written = plot_run(&out)?;
        eprintln!("plots: {}", join_paths(&written));
    }
    if !t.state.summary.is_empty() {
        let text = summary_table(&t.state.summary);
        std::fs::write(out.join("summary.txt"), &text)?;
        println!("\n{text}");
    }
    println!(
        "{} steps; model saved to {}; metrics in {}",
        t.state.global_step,
        final_model.display(),
        t.log.path().display()
    );
    Ok(RunSummary {
        steps: t.state.global_step,
        warnings,
        output_dir: out,
        final_model,
        summary: t.state.summary,
    })
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_name(k: sdk::StageKind) -> &'static str {
    match k {
        sdk::StageKind::Sft => "sft",
        sdk::StageKind::Grpo => "grpo",
    }
}

fn new_optimizer(exp: &Experiment, policy: &Policy) -> AdamW {
    let o = &exp.optim;
    AdamW::new(
        &policy.tensors(),
        [o.betas[0], o.betas[1]],
        o.eps,
        o.weight_decay,
    )
}

/// A line above the progress bar, or on stderr when the bar is not drawn.
fn say(bar: &ProgressBar, msg: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", msg.as_ref());
    } else {
        bar.println(msg);
    }
}

fn progress_bar(exp: &Experiment) -> ProgressBar {
    if !exp.logging.progress {
        return ProgressBar::hidden();
    }
    let bar = match exp.logging.total_steps {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if exp.logging.total_steps.is_some() {
        "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}, {per_sec}] {msg}"
    } else {
        "{spinner} step {pos} [{elapsed_precise}, {per_sec}] {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Summary table of every evaluation of the run.
pub fn summary_table(rows: &[SummaryRow]) -> String {
    let results: Vec<(String, EvalResult)> = rows
        .iter()
        .map(|r| {
            (
                format!("{} (step {})", r.when, r.step),
                EvalResult {
                    dataset: r.dataset.clone(),
                    prompts: r.prompts,
                    skipped: 0,
                    accuracy: r.accuracy,
                    pass_at_k: r.pass_at_k.clone(),
                    reward_mean: r.reward,
                    components: BTreeMap::new(),
                    response_tokens_mean: r.length,
                    records: Vec::new(),
                },
            )
        })
        .collect();
    table(&results)
}

/// Mean and (population) standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

impl Trainer<'_> {
    fn next_plan(&mut self) -> Result<Option<sdk::Plan>> {
        let mut metrics = self.state.last_metrics.clone();
        for (name, l) in &self.plugins.datasets {
            metrics.push((format!("dataset/{name}/len"), l.len() as f64));
        }
        metrics.push((
            "batch/prompts".into(),
            self.exp.rollout.prompts_per_step as f64,
        ));
        let ts = sdk::TrainState {
            global_step: self.state.global_step,
            stage: self.state.stage.clone(),
            stage_step: self.state.stage_step,
            metrics,
        };
        self.plugins.schedule.next_plan(&ts)
    }

    /// Samples drawn for this step (round `round` of dynamic sampling).
    fn draw(&mut self, plan: &sdk::Plan, count: usize, round: u32) -> Result<Vec<sdk::Sample>> {
        let stream = self.state.global_step * 1000 + u64::from(round);
        let picks = self.mixer.draw(&plan.datasets, count, stream)?;
        let mut by_ds: BTreeMap<&str, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, (ds, idx)) in picks.iter().enumerate() {
            by_ds.entry(ds.as_str()).or_default().push((i, *idx));
        }
        let mut out: Vec<Option<sdk::Sample>> = vec![None; picks.len()];
        for (ds, items) in by_ds {
            let idx: Vec<u64> = items.iter().map(|x| x.1).collect();
            let samples = self.plugins.datasets[ds]
                .get_many(&idx)
                .with_context(|| format!("dataset {ds}"))?;
            for ((i, _), s) in items.iter().zip(samples) {
                out[*i] = Some(s);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn lr(&self, s: &StageSettings) -> f64 {
        let o = &s.optim;
        learning_rate(
            o.lr,
            o.lr_decay,
            o.warmup_steps,
            o.decay_steps.unwrap_or(1),
            o.min_lr_ratio,
            self.state.stage_step,
        )
    }

    fn sft_step(&mut self, plan: &sdk::Plan, s: &StageSettings) -> Result<BTreeMap<String, f64>> {
        let t0 = Instant::now();
        self.policy
            .set_trainable(s.grpo.freeze_vision, s.grpo.freeze_language);
        let n = s.sft.batch_size.unwrap_or(s.rollout.prompts_per_step);
        let samples = self.draw(plan, n, 0)?;
        let mut convs = Vec::with_capacity(samples.len());
        for smp in &samples {
            convs.push(sft_conversation(smp)?);
        }
        // Encoded once: the length filter and the micro-batches share it.
        let encoded = self.policy.processor.encode(&convs, false)?;
        let before = encoded.len();
        let encoded: Vec<_> = encoded
            .into_iter()
            .filter(|e| e.len() <= s.sft.max_tokens)
            .collect();
        let skipped = before - encoded.len();
        if encoded.is_empty() {
            bail!(
                "step {}: every SFT sample is longer than sft.max_tokens = {}",
                self.state.global_step + 1,
                s.sft.max_tokens
            );
        }
        let lr = self.lr(s);
        let st = sft::step(&self.policy, Some(&mut self.opt), s, &encoded, lr)?;
        let secs = t0.elapsed().as_secs_f64();
        Ok(BTreeMap::from([
            ("sft/loss".to_string(), st.loss),
            ("sft/tokens".to_string(), st.tokens as f64),
            ("sft/skipped_long".to_string(), skipped as f64),
            ("grad_norm".to_string(), st.grad_norm),
            ("lr".to_string(), lr),
            ("time/update".to_string(), secs),
            ("time/step".to_string(), secs),
            (
                "throughput/tokens_per_s".to_string(),
                st.tokens as f64 / secs.max(1e-9),
            ),
        ]))
    }

    fn grpo_step(&mut self, plan: &sdk::Plan, s: &StageSettings) -> Result<BTreeMap<String, f64>> {
        let t_step = Instant::now();
        let step = self.state.global_step;
        let g = &s.grpo;
        let n = s.rollout.group_size as usize;
        let want = s.rollout.prompts_per_step;
        let need_ref = g.kl.coef > 0.0;
        if need_ref && self.reference.is_none() {
            self.reference = Some(Reference::load(&self.exp.model, self.exp.seed)?);
        }
        let kl_in_reward = need_ref && g.kl.placement == KlPlacement::Reward;
        let need_old = s.optim.updates_per_batch > 1 || kl_in_reward;
        self.policy
            .set_trainable(g.freeze_vision, g.freeze_language);
        let cfg = RolloutConfig {
            samples_per_prompt: n,
            sampling: SamplingParams {
                greedy: false,
                temperature: s.rollout.temperature,
                top_k: (s.rollout.top_k > 0).then_some(i64::from(s.rollout.top_k)),
                top_p: (s.rollout.top_p < 1.0).then_some(s.rollout.top_p),
            },
            max_new_tokens: s.rollout.max_response_tokens,
            min_new_tokens: s.rollout.min_new_tokens,
            blocked_token_ids: Vec::new(),
        };
        let pad_id = self.policy.processor.tokenizer.pad_id;
        let mm = self.policy.is_multimodal();
        let device = self.policy.device;
        let workers = self.policy.workers;
        let mbs = s.optim.micro_batch_size;

        let (mut t_rollout, mut t_reward, mut t_logp) = (0.0, 0.0, 0.0);
        let mut rows: Vec<Row> = Vec::new();
        let mut scores: Vec<CombinedScore> = Vec::new();
        let mut old_lp: Vec<Vec<f32>> = Vec::new();
        let mut ref_lp: Vec<Vec<f32>> = Vec::new();
        let (mut generated, mut skipped_long, mut rounds) = (0usize, 0usize, 0u32);
        let (mut all_totals, mut all_lengths) = (Vec::new(), Vec::new());
        let mut component_sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        let mut failures = 0usize;
        let max_rounds = if g.dynamic_sampling.enabled {
            1 + g.dynamic_sampling.max_retries
        } else {
            1
        };
        let mut groups = 0usize;
        while rounds < max_rounds && groups < want {
            // 1. Prompts and rollouts.
            let t0 = Instant::now();
            let samples = self.draw(plan, want, rounds)?;
            let convs = samples
                .iter()
                .map(prompt_conversation)
                .collect::<Result<Vec<_>>>()?;
            let (batch, kept) =
                prepare_prompts(&self.policy.processor, &convs, s.rollout.max_prompt_tokens)?;
            skipped_long += convs.len() - kept.len();
            rounds += 1;
            let Some(batch) = batch else { continue };
            let mut rng = SeededRng::new(derive_seed(
                self.exp.seed,
                "rollout",
                step * 1000 + u64::from(rounds),
            ));
            let new_rows = roll_out(&self.policy, &batch, &cfg, &mut rng, 0)?;
            t_rollout += t0.elapsed().as_secs_f64();
            generated += new_rows.len();

            // 2. Rewards on the tokio runtime, concurrently with the log-prob passes.
            let to_score = reward_groups(&new_rows, &samples, &kept);
            let rewards = Arc::clone(&self.plugins.rewards);
            let scoring = self.runtime.spawn_blocking(move || {
                let t = Instant::now();
                score_all(&rewards, &to_score).map(|s| (s, t.elapsed().as_secs_f64()))
            });
            let t1 = Instant::now();
            let new_ref = match &self.reference {
                Some(r) if need_ref => {
                    rows_logprobs(r.lm(), &new_rows, mbs, pad_id, mm, device, workers)?
                }
                _ => Vec::new(),
            };
            let new_old = if need_old {
                rows_logprobs(
                    self.policy.lm(),
                    &new_rows,
                    mbs,
                    pad_id,
                    mm,
                    device,
                    workers,
                )?
            } else {
                Vec::new()
            };
            t_logp += t1.elapsed().as_secs_f64();
            let (new_scores, secs) = self
                .runtime
                .block_on(scoring)
                .context("the reward task panicked")??;
            t_reward += secs;

            // 3. Keep the groups that carry signal (dynamic sampling) or all of them.
            let totals: Vec<f64> = new_scores.iter().map(|c| c.total).collect();
            for (r, sc) in new_rows.iter().zip(&new_scores) {
                all_totals.push(sc.total);
                all_lengths.push(r.response.len() as f64);
                failures += sc.failures.len();
                for (k, v) in &sc.components {
                    let e = component_sums.entry(k.clone()).or_default();
                    e.0 += v;
                    e.1 += 1;
                }
            }
            let keep_group: Vec<bool> = if g.dynamic_sampling.enabled {
                let metric: Vec<f64> = new_scores
                    .iter()
                    .zip(&totals)
                    .map(|(c, t)| match g.dynamic_sampling.metric.as_str() {
                        "total" => *t,
                        m => c.components.get(m).copied().unwrap_or(*t),
                    })
                    .collect();
                informative_groups(&metric, n)
            } else {
                vec![true; new_rows.len() / n]
            };
            let mut it_rows = new_rows.into_iter();
            let mut it_scores = new_scores.into_iter();
            for (gi, keep) in keep_group.iter().enumerate() {
                let group_rows: Vec<Row> = it_rows.by_ref().take(n).collect();
                let group_scores: Vec<CombinedScore> = it_scores.by_ref().take(n).collect();
                if !*keep || groups >= want {
                    continue;
                }
                for (j, (mut row, sc)) in group_rows.into_iter().zip(group_scores).enumerate() {
                    let i = gi * n + j;
                    row.group = groups;
                    if let Some(v) = new_ref.get(i) {
                        ref_lp.push(v.clone());
                    }
                    if let Some(v) = new_old.get(i) {
                        old_lp.push(v.clone());
                    }
                    rows.push(row);
                    scores.push(sc);
                }
                groups += 1;
            }
        }
        if rows.is_empty() {
            bail!(
                "step {}: no usable group after {rounds} round(s) of sampling ({skipped_long} prompts over rollout.max_prompt_tokens)",
                step + 1
            );
        }

        // 4. Rewards -> advantages (KL penalty in the reward first, if so configured).
        let mut totals: Vec<f64> = scores.iter().map(|c| c.total).collect();
        let mut kl_metric = f64::NAN;
        if need_ref {
            let (mut sum, mut count) = (0.0, 0usize);
            for (i, total) in totals.iter_mut().enumerate() {
                let pol = match old_lp.get(i) {
                    Some(o) => o.clone(),
                    None => Vec::new(),
                };
                if pol.is_empty() {
                    continue;
                }
                let a = tch::Tensor::from_slice(&pol);
                let b = tch::Tensor::from_slice(&ref_lp[i]);
                let kl = kl_estimate(&a, &b, g.kl.estimator)
                    .sum(tch::Kind::Double)
                    .double_value(&[]);
                sum += kl;
                count += pol.len();
                if kl_in_reward {
                    *total -= g.kl.coef * kl;
                }
            }
            if count > 0 {
                kl_metric = sum / count as f64;
            }
        }
        let adv = advantages(&totals, n, g.advantage);
        let (mut train_rows, mut train_adv, mut train_old, mut train_ref) =
            (rows.clone(), adv.clone(), old_lp.clone(), ref_lp.clone());
        let mut pad_eligible = f64::NAN;
        if g.pad.enabled {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.exp.seed, "pad", step));
            let sel = pad::select(&adv, &g.pad, self.state.stage_step, &mut rng);
            pad_eligible = sel.eligible as f64;
            let pick = |v: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                if v.is_empty() {
                    Vec::new()
                } else {
                    sel.kept.iter().map(|&i| v[i].clone()).collect()
                }
            };
            train_rows = sel.kept.iter().map(|&i| rows[i].clone()).collect();
            train_adv = sel.kept.iter().map(|&i| adv[i]).collect();
            train_old = pick(&old_lp);
            train_ref = pick(&ref_lp);
        }

        // 5. The update.
        let lr = self.lr(s);
        let ent_coef = entropy_coef(
            g.entropy.coef,
            g.entropy.warmup_steps,
            g.entropy.decay,
            self.state.stage_step,
        );
        let t_upd = Instant::now();
        let stats = if train_rows.is_empty() {
            None
        } else {
            Some(update(
                &self.policy,
                &mut self.opt,
                s,
                &UpdateInputs {
                    rows: &train_rows,
                    advantages: &train_adv,
                    old_logprobs: (s.optim.updates_per_batch > 1).then_some(train_old.as_slice()),
                    ref_logprobs: (need_ref && !kl_in_reward).then_some(train_ref.as_slice()),
                    lr,
                    entropy_coef: ent_coef,
                },
            )?)
        };
        let t_update = t_upd.elapsed().as_secs_f64();

        // 6. Metrics.
        let (rmean, rstd) = mean_std(&all_totals);
        let (lmean, _) = mean_std(&all_lengths);
        let resp_tokens: f64 = all_lengths.iter().sum();
        let mut v = BTreeMap::new();
        v.insert("reward/mean".to_string(), rmean);
        v.insert("reward/std".to_string(), rstd);
        v.insert("reward".to_string(), rmean);
        for (k, (sum, c)) in &component_sums {
            v.insert(format!("reward/{k}/mean"), sum / *c as f64);
        }
        if let Some((sum, c)) = component_sums.get("accuracy") {
            v.insert("accuracy".to_string(), sum / *c as f64);
        }
        v.insert("reward/failures".into(), failures as f64);
        v.insert("response_length/mean".into(), lmean);
        let prompt_tokens: f64 = rows.iter().map(|r| r.prompt.len() as f64).sum();
        v.insert(
            "prompt_length/mean".into(),
            prompt_tokens / rows.len().max(1) as f64,
        );
        v.insert(
            "response/stopped_fraction".into(),
            rows.iter().filter(|r| r.stopped).count() as f64 / rows.len() as f64,
        );
        if kl_metric.is_finite() {
            v.insert("kl".into(), kl_metric);
        }
        if let Some(st) = &stats {
            if !kl_in_reward && need_ref {
                v.insert("kl".into(), st.kl);
            }
            v.insert("entropy".into(), st.entropy);
            v.insert("clip_fraction".into(), st.clip_fraction);
            v.insert("grad_norm".into(), st.grad_norm);
            v.insert("loss".into(), st.loss);
            v.insert("time/forward".into(), st.time_forward);
            v.insert("time/backward".into(), st.time_backward);
            v.insert("time/optimizer".into(), st.time_optimizer);
        }
        v.insert("lr".into(), lr);
        v.insert("entropy_coef".into(), ent_coef);
        v.insert("samples/generated".into(), generated as f64);
        v.insert("samples/effective".into(), train_rows.len() as f64);
        v.insert(
            "samples/zero_advantage".into(),
            adv.iter().filter(|a| a.abs() < 1e-12).count() as f64,
        );
        v.insert("samples/skipped_long_prompts".into(), skipped_long as f64);
        if pad_eligible.is_finite() {
            v.insert("pad/eligible".into(), pad_eligible);
            v.insert("pad/tau".into(), g.pad.tau(self.state.stage_step));
        }
        if g.dynamic_sampling.enabled {
            v.insert("dynamic/rounds".into(), f64::from(rounds));
            v.insert("dynamic/groups".into(), groups as f64);
        }
        let t_total = t_step.elapsed().as_secs_f64();
        v.insert("time/rollout".into(), t_rollout);
        v.insert("time/reward".into(), t_reward);
        v.insert("time/logprobs".into(), t_logp);
        v.insert("time/update".into(), t_update);
        v.insert("time/step".into(), t_total);
        v.insert(
            "throughput/gen_tokens_per_s".into(),
            resp_tokens / t_rollout.max(1e-9),
        );
        let seq_tokens = prompt_tokens + rows.iter().map(|r| r.response.len() as f64).sum::<f64>();
        v.insert(
            "throughput/tokens_per_s".into(),
            seq_tokens / t_total.max(1e-9),
        );
        Ok(v)
    }

    fn finish_step(&mut self, plan: &sdk::Plan, values: BTreeMap<String, f64>) -> Result<()> {
        let rec = StepRecord {
            step: self.state.global_step,
            stage: plan.stage.clone(),
            kind: kind_name(plan.kind).to_string(),
            stage_step: self.state.stage_step,
            values,
        };
        self.log.write(&rec)?;
        let get = |k: &str| rec.values.get(k).copied();
        let mut msg = format!("{} {}", plan.stage, self.state.stage_step);
        if let Some(r) = get("reward/mean") {
            msg.push_str(&format!(" | reward {r:.3}"));
        }
        if let Some(a) = get("accuracy") {
            msg.push_str(&format!(" | acc {a:.3}"));
        }
        if let Some(l) = get("sft/loss") {
            msg.push_str(&format!(" | sft loss {l:.3}"));
        }
        if let Some(t) = get("time/step") {
            msg.push_str(&format!(" | {t:.2} s/step"));
        }
        // Without a terminal (CI logs, nohup) the bar is not drawn: print a line per step.
        if self.exp.logging.progress && self.bar.is_hidden() {
            let total = self
                .exp
                .logging
                .total_steps
                .map_or(String::new(), |n| format!("/{n}"));
            eprintln!("step {}{total} {msg}", self.state.global_step);
        }
        self.bar.set_message(msg);
        self.bar.set_position(self.state.global_step);
        self.state.last_metrics = rec.values.into_iter().collect();
        Ok(())
    }

    fn evaluate(&mut self, when: &str) -> Result<()> {
        let Some(e) = &self.exp.eval else {
            return Ok(());
        };
        let set = EvalSettings {
            samples: e.samples,
            greedy: e.greedy,
            temperature: e.temperature,
            max_response_tokens: e
                .max_response_tokens
                .unwrap_or(self.exp.rollout.max_response_tokens),
            max_prompt_tokens: self.exp.rollout.max_prompt_tokens,
            limit: e.limit,
            pass_k: e.pass_k.clone(),
            batch_prompts: self.exp.rollout.prompts_per_step.max(8),
            seed: self.exp.seed,
        };
        let mut values = BTreeMap::new();
        for ds in &e.datasets {
            let t0 = Instant::now();
            let r = evaluate(
                &self.policy,
                ds,
                &self.plugins.datasets[ds],
                &self.plugins.rewards[..],
                &set,
            )?;
            write_records(
                &self
                    .out
                    .join("eval")
                    .join(format!("step-{:08}.jsonl", self.state.global_step)),
                &r.records,
            )?;
            values.insert(format!("eval/{ds}/accuracy"), r.accuracy);
            values.insert(format!("eval/{ds}/reward"), r.reward_mean);
            values.insert(format!("eval/{ds}/length"), r.response_tokens_mean);
            for (k, p) in &r.pass_at_k {
                values.insert(format!("eval/{ds}/pass@{k}"), *p);
            }
            values.insert(format!("time/eval/{ds}"), t0.elapsed().as_secs_f64());
            say(
                &self.bar,
                format!(
                    "eval {when}: {ds} accuracy {:.3} over {} prompts",
                    r.accuracy, r.prompts
                ),
            );
            self.state.summary.push(SummaryRow {
                when: when.to_string(),
                step: self.state.global_step,
                dataset: ds.clone(),
                prompts: r.prompts,
                accuracy: r.accuracy,
                pass_at_k: r.pass_at_k.clone(),
                reward: r.reward_mean,
                length: r.response_tokens_mean,
            });
        }
        self.log.write(&StepRecord {
            step: self.state.global_step,
            stage: self.state.stage.clone(),
            kind: "eval".into(),
            stage_step: self.state.stage_step,
            values,
        })
    }

    fn checkpoint(&mut self, store: &CheckpointStore) -> Result<()> {
        self.state.cursors = self.mixer.cursors.clone();
        self.state.schedule_state = to_hex(&self.plugins.schedule.save_state()?);
        self.state.plugin_sha256 = self.plugins.hashes();
        self.state.metrics_records = self.log.records;
        let (policy, opt, st) = (&self.policy, &self.opt, &self.state);
        let dir = store.save(st.global_step, |d| state::save(d, policy, opt, st))?;
        say(&self.bar, format!("checkpoint {}", dir.display()));
        Ok(())
    }
}
