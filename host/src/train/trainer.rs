//! What the training loop carries from step to step, and what it does
//! between steps: starting (fresh or from a checkpoint), asking the schedule
//! for the next plan, entering a stage, drawing samples, logging a finished
//! step, evaluating, checkpointing and writing the run's results.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use lmmhost_plugin_host::OnError;
use lmmhost_sdk as sdk;

use super::checkpoint_store::{check_writable, CheckpointStore};
use super::data::{check_sample, Mixer};
use super::data_parallel::DataParallel;
use super::eval::{evaluate, write_records, EvalSettings};
use super::experiment::{Experiment, LongInputs, ModelSection, SpecialTokens, StageSettings};
use super::failures::{Failure, FailureLog};
use super::optim::AdamW;
use super::plugins::{changed_plugins, Plugins};
use super::policy::{Freeze, Policy, Reference};
use super::progress::{progress_bar, say};
use super::state::{self, from_hex, to_hex, SummaryRow, TrainerState};
use crate::metrics::log::{MetricsLog, StepRecord};

/// Everything the loop carries from step to step.
pub(crate) struct Trainer<'a> {
    pub exp: &'a Experiment,
    /// This process's rank among the data-parallel ranks (a world of one
    /// when not launched as a rank).
    pub dp: DataParallel,
    /// `[model]` as this rank loads it (its own device under NCCL): also
    /// where a KL reference copy goes unless `grpo.kl.reference_device` says.
    pub model: ModelSection,
    pub plugins: Plugins,
    pub policy: Policy,
    /// Loaded by the first step whose KL penalty needs it
    /// (`Trainer::ensure_reference`, in kl_reference.rs).
    pub reference: Option<Reference>,
    pub opt: AdamW,
    pub mixer: Mixer,
    pub state: TrainerState,
    pub log: MetricsLog,
    pub out: PathBuf,
    pub store: CheckpointStore,
    /// Runs the reward plugins beside the log-prob passes.
    pub runtime: tokio::runtime::Runtime,
    pub bar: ProgressBar,
    /// What resuming warned about.
    pub warnings: Vec<String>,
    /// Failures survived under `on_error = "zero"`.
    pub failures: FailureLog,
    /// Samples left out of this step (reset when a step starts).
    pub dropped_samples: usize,
    /// Over-long inputs reported so far (the first few are, with their ids).
    pub long_reported: usize,
}

/// This rank's share of a step's draw, bad samples left out.
#[derive(Default)]
pub(crate) struct Drawn {
    pub samples: Vec<sdk::Sample>,
    /// The dataset of each sample.
    pub datasets: Vec<String>,
    /// Each sample's place in the step's draw, the same on every rank: what
    /// its random streams are keyed by.
    pub places: Vec<usize>,
}

/// Over-long inputs reported one by one before the rest are only counted.
const LONG_REPORTS: usize = 5;

/// An input over its token limit, as the report names it.
pub(crate) struct LongInput<'a> {
    /// "prompt" or "conversation".
    pub what: &'a str,
    pub sample_id: &'a str,
    pub dataset: &'a str,
    pub tokens: usize,
    /// The key that sets the limit and its value.
    pub key: &'a str,
    pub limit: usize,
}

impl<'a> Trainer<'a> {
    /// Starts the plugins and loads the model; with `resume`, from the latest
    /// checkpoint (trainer state, optimizer, dataset cursors, schedule state).
    pub fn start(exp: &'a Experiment, resume: bool) -> Result<Trainer<'a>> {
        let joined = DataParallel::join(exp)?;
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
        let main = joined.as_ref().is_none_or(DataParallel::is_main);
        // Where the run will write (rank 0 only), checked before any compute is spent.
        if main {
            check_writable(&out).with_context(|| format!("output_dir {}", out.display()))?;
            store
                .check_writable()
                .with_context(|| format!("checkpoint.dir {}", ckpt_dir.display()))?;
        }
        let resume_from = if resume {
            let latest = store.latest()?;
            if latest.is_none() && main {
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

        let mut plugins = Plugins::start(exp)?;
        // A rank computes on its own device: cuda:LOCAL_RANK under NCCL.
        let mut model = exp.model.clone();
        if let Some(dp) = &joined {
            model.device = match dp.device() {
                tch::Device::Cuda(i) => format!("cuda:{i}"),
                _ => "cpu".into(),
            };
        }
        let policy = Policy::load(
            &model,
            resume_from.as_ref().map(|d| d.join("model")).as_deref(),
            exp.seed,
        )?;
        let dp = joined.unwrap_or_else(|| DataParallel::single(policy.device));
        // Every rank starts from rank 0's weights, as DDP does.
        dp.broadcast_from_main(&policy.tensors())?;
        let mut opt = new_optimizer(exp, &policy, &dp);
        let lens = plugins
            .datasets
            .iter()
            .map(|(k, l)| (k.clone(), l.len()))
            .collect();
        let mut mixer = Mixer::new(exp.seed, lens);
        let mut state = TrainerState::fresh(exp.seed);
        let mut warnings = Vec::new();
        if let Some(dir) = &resume_from {
            state = state::load_state(dir)?;
            let (read, files) =
                state::load_optimizer(dir, &policy, &mut opt, dp.rank(), dp.world_size())?;
            mixer.restore(&state.cursors);
            plugins
                .schedule
                .load_state(&from_hex(&state.schedule_state)?)
                .context("restoring the schedule plugin's state")?;
            warnings = changed_plugins(&state.plugin_sha256, &plugins.hashes());
            if dp.is_main() {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                eprintln!(
                    "resumed from {} (step {}, stage {:?}; rank 0 read {read} bytes of optimizer state from {files} file(s))",
                    dir.display(),
                    state.global_step,
                    state.stage
                );
            }
        }
        let keep = resume_from.as_ref().map(|_| state.metrics_records);
        let log = if dp.is_main() {
            MetricsLog::open(&out, exp.logging.tensorboard, keep)?
        } else {
            MetricsLog::discard(&out, keep)
        };
        if log.missing > 0 {
            let w = format!(
                "{} holds {} of the {} records written before the checkpoint of step {}: the metrics of the earlier steps are lost (restore the file from a backup to keep them); the run goes on from step {}",
                log.path().display(),
                log.records,
                state.metrics_records,
                state.global_step,
                state.global_step + 1
            );
            eprintln!("warning: {w}");
            warnings.push(w);
        }
        let bar = if dp.is_main() {
            progress_bar(exp)
        } else {
            ProgressBar::hidden()
        };
        bar.set_position(state.global_step);
        let failures = FailureLog::new(&out, dp.rank());
        Ok(Trainer {
            exp,
            dp,
            model,
            plugins,
            policy,
            reference: None,
            opt,
            mixer,
            state,
            log,
            out: out.clone(),
            store,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .context("starting the tokio runtime")?,
            bar,
            warnings,
            failures,
            dropped_samples: 0,
            long_reported: 0,
        })
    }

    /// Evaluation before the first step and after every stage is configured.
    pub fn evals_at_boundaries(&self) -> bool {
        self.exp
            .eval
            .as_ref()
            .is_some_and(|e| e.at_stage_boundaries)
    }

    pub fn next_plan(&mut self) -> Result<Option<sdk::Plan>> {
        let mut metrics = self.state.last_metrics.clone();
        for (name, l) in &self.plugins.datasets {
            metrics.push((format!("dataset/{name}/len"), l.len() as f64));
        }
        metrics.extend(self.exp.batch_metrics());
        let ts = sdk::TrainState {
            global_step: self.state.global_step,
            stage: self.state.stage.clone(),
            stage_step: self.state.stage_step,
            metrics,
        };
        self.plugins.schedule.next_plan(&ts)
    }

    /// Called when `plan` names another stage than the last step's: the
    /// finished stage is evaluated, and the new one starts with fresh
    /// optimizer moments and its own warmup, and a KL reference copied from
    /// its own start, as the papers' stages were separate runs.
    pub fn enter_stage(&mut self, plan: &sdk::Plan) -> Result<()> {
        if !self.state.stage.is_empty() {
            if self.evals_at_boundaries() {
                self.evaluate(&format!("after {}", self.state.stage))?;
            }
            // Fresh moments; the f32 master weights are the weights
            // themselves and carry over.
            let params = self.policy.tensors();
            let masters = match self.opt.gathered(self.dp.dist(), &params)? {
                Some(whole) => whole.masters,
                None => std::mem::take(&mut self.opt.masters),
            };
            self.opt = new_optimizer(self.exp, &self.policy, &self.dp);
            self.opt.masters = masters;
        }
        if self.reference.as_ref().is_some_and(|r| r.stage.is_some()) {
            self.reference = None;
        }
        self.announce(format!(
            "stage {} ({}) from step {}",
            plan.stage,
            kind_name(plan.kind),
            self.state.global_step + 1
        ));
        self.state.stage = plan.stage.clone();
        self.state.stage_step = 0;
        Ok(())
    }

    /// The stage's settings that live on the model and the optimizer: which
    /// parameters train, and the optimizer's hyperparameters.
    pub fn configure_stage(&mut self, s: &StageSettings) {
        let g = &s.grpo;
        self.policy.set_trainable(&Freeze {
            vision: g.freeze_vision,
            language: g.freeze_language,
            prefixes: g.freeze_prefixes.clone(),
        });
        let o = &s.optim;
        self.opt.configure(o.betas, o.eps, o.weight_decay);
    }

    /// Reports an input over its token limit: an error with `policy =
    /// "error"`, else a line for the first few (later ones are only counted).
    pub(crate) fn over_limit(&mut self, long: &LongInput, policy: LongInputs) -> Result<()> {
        let msg = format!(
            "step {}: {} of sample {:?} (dataset {}) has {} tokens, over {} = {}",
            self.state.global_step + 1,
            long.what,
            long.sample_id,
            long.dataset,
            long.tokens,
            long.key,
            long.limit
        );
        if policy == LongInputs::Error {
            anyhow::bail!(
                "{msg} (raise the limit, or skip such inputs with {} = \"skip\")",
                if long.what == "prompt" {
                    "rollout.long_prompts"
                } else {
                    "sft.long_samples"
                }
            );
        }
        self.long_reported += 1;
        if self.long_reported <= LONG_REPORTS {
            let more = if self.long_reported == LONG_REPORTS {
                "; further ones are only counted in the metrics"
            } else {
                ""
            };
            say(&self.bar, format!("{msg}: skipped{more}"));
        }
        Ok(())
    }

    /// A line for the user above the progress bar, from rank 0 alone (every
    /// rank would say the same).
    pub fn announce(&self, msg: impl AsRef<str>) {
        if self.dp.is_main() {
            say(&self.bar, msg);
        }
    }

    /// This rank's share of the `count` samples drawn for this step (round
    /// `round` of dynamic sampling): every rank draws the same picks (the
    /// data cursors stay the same everywhere) and loads only its own,
    /// contiguous share of them, whole groups. A bad sample (a row the loader
    /// cannot parse, text holding a special token, an unknown role) stops the
    /// run, or under the loader's `on_error = "zero"` is left out of the step
    /// and logged by the rank that loaded it.
    pub fn draw(&mut self, plan: &sdk::Plan, count: usize, round: u32) -> Result<Drawn> {
        let stream = self.state.global_step * 1000 + u64::from(round);
        let all = self.mixer.draw(&plan.datasets, count, stream)?;
        let mine = self.dp.share(all.len());
        let first = mine.start;
        let picks = &all[mine];
        let mut by_ds: BTreeMap<&str, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, (ds, idx)) in picks.iter().enumerate() {
            by_ds.entry(ds.as_str()).or_default().push((i, *idx));
        }
        let mut out: Vec<Option<sdk::Sample>> = vec![None; picks.len()];
        let mut failed = Vec::new();
        for (ds, items) in by_ds {
            let idx: Vec<u64> = items.iter().map(|x| x.1).collect();
            let entry = &self.exp.datasets[ds];
            let lenient = self.exp.plugins[&entry.loader].on_error == OnError::Zero;
            let loader = &self.plugins.datasets[ds];
            let samples: Vec<Result<sdk::Sample>> = if lenient {
                let each = match loader.get_each(&idx) {
                    Ok(each) => each,
                    // The call failed as a whole: one index at a time finds the culprit.
                    Err(_) => idx
                        .iter()
                        .map(|&i| loader.get(i).map_err(|e| format!("{e:#}")))
                        .collect(),
                };
                each.into_iter()
                    .zip(&idx)
                    .map(|(r, i)| r.map_err(|e| anyhow::anyhow!("sample {i}: {e}")))
                    .collect()
            } else {
                loader
                    .get_many(&idx)
                    .with_context(|| format!("dataset {ds}"))?
                    .into_iter()
                    .map(Ok)
                    .collect()
            };
            for ((i, index), s) in items.iter().zip(samples) {
                let checked = s.and_then(|s| {
                    check_sample(
                        &s,
                        ds,
                        &self.policy.processor,
                        entry.special_tokens,
                        &tokenize_setting(ds),
                    )?;
                    Ok(s)
                });
                match checked {
                    Ok(s) => out[*i] = Some(s),
                    Err(e) if lenient => failed.push(Failure {
                        step: self.state.global_step + 1,
                        kind: "sample",
                        source: ds.to_string(),
                        sample: format!("index {index}"),
                        error: format!("{e:#}"),
                    }),
                    Err(e) => {
                        return Err(e.context(format!(
                            "dataset {ds} (plugins.{}.on_error = \"zero\" leaves bad samples out instead)",
                            entry.loader
                        )))
                    }
                }
            }
        }
        self.dropped_samples += failed.len();
        self.failures.report(&self.bar, &failed)?;
        let mut drawn = Drawn::default();
        for (i, (s, (ds, _))) in out.into_iter().zip(picks).enumerate() {
            if let Some(s) = s {
                drawn.samples.push(s);
                drawn.datasets.push(ds.clone());
                drawn.places.push(first + i);
            }
        }
        Ok(drawn)
    }

    /// Counts the step done, logs its metrics and keeps them for the schedule.
    pub fn finish_step(&mut self, plan: &sdk::Plan, values: BTreeMap<String, f64>) -> Result<()> {
        self.state.global_step += 1;
        self.state.stage_step += 1;
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
        if self.exp.logging.progress && self.bar.is_hidden() && self.dp.is_main() {
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

    /// Evaluates and checkpoints when the settings say this step is due.
    pub fn after_step(&mut self) -> Result<()> {
        let step = self.state.global_step;
        let eval_due =
            (self.exp.eval.as_ref()).is_some_and(|e| e.every > 0 && step.is_multiple_of(e.every));
        if eval_due {
            self.evaluate(&format!("step {step}"))?;
        }
        let every = self.exp.checkpoint.every;
        if every > 0 && step.is_multiple_of(every) {
            self.checkpoint()?;
        }
        Ok(())
    }

    pub fn evaluate(&mut self, when: &str) -> Result<()> {
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
            special_tokens: SpecialTokens::Refuse,
            allow_special_tokens_with: String::new(),
        };
        let mut values = BTreeMap::new();
        for ds in &e.datasets {
            let set = EvalSettings {
                special_tokens: self.exp.datasets[ds].special_tokens,
                allow_special_tokens_with: tokenize_setting(ds),
                ..set.clone()
            };
            let t0 = Instant::now();
            let r = evaluate(
                &self.dp,
                &self.policy,
                ds,
                &self.plugins.datasets[ds],
                &self.plugins.rewards[..],
                &set,
            )?;
            if self.dp.is_main() {
                write_records(
                    &self
                        .out
                        .join("eval")
                        .join(format!("step-{:08}.jsonl", self.state.global_step)),
                    &r.records,
                )?;
            }
            values.insert(format!("eval/{ds}/accuracy"), r.accuracy);
            values.insert(format!("eval/{ds}/reward"), r.reward_mean);
            values.insert(format!("eval/{ds}/length"), r.response_tokens_mean);
            for (k, p) in &r.pass_at_k {
                values.insert(format!("eval/{ds}/pass@{k}"), *p);
            }
            values.insert(format!("time/eval/{ds}"), t0.elapsed().as_secs_f64());
            let split = if r.per_rank.len() > 1 {
                let shares: Vec<String> = r.per_rank.iter().map(usize::to_string).collect();
                format!(" ({} on {} ranks)", shares.join(" + "), r.per_rank.len())
            } else {
                String::new()
            };
            self.announce(format!(
                "eval {when}: {ds} accuracy {:.3} over {} prompts{split}",
                r.accuracy, r.prompts
            ));
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

    pub fn checkpoint(&mut self) -> Result<()> {
        self.state.cursors = self.mixer.cursors.clone();
        self.state.schedule_state = to_hex(&self.plugins.schedule.save_state()?);
        self.state.plugin_sha256 = self.plugins.hashes();
        self.state.metrics_records = self.log.records;
        let written =
            state::write_checkpoint(&self.store, &self.dp, &self.policy, &self.opt, &self.state)?;
        if let Some(dir) = written {
            say(&self.bar, format!("checkpoint {}", dir.display()));
        }
        Ok(())
    }
}

pub(crate) fn kind_name(k: sdk::StageKind) -> &'static str {
    match k {
        sdk::StageKind::Sft => "sft",
        sdk::StageKind::Grpo => "grpo",
    }
}

fn new_optimizer(exp: &Experiment, policy: &Policy, dp: &DataParallel) -> AdamW {
    let o = &exp.optim;
    // A world of one has nothing to shard.
    let zero = if dp.world_size() > 1 {
        exp.distributed.zero_stage
    } else {
        0
    };
    AdamW::new([o.betas[0], o.betas[1]], o.eps, o.weight_decay)
        .with_master_weights(policy.precision.master_weights())
        .with_zero_stage(zero)
}

/// The experiment setting that lets dataset `ds` hold special tokens.
fn tokenize_setting(ds: &str) -> String {
    format!("datasets.{ds}.special_tokens = \"tokenize\"")
}
