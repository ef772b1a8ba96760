//! `lmmhost run`: the training loop, top to bottom.
//!
//! Every step: ask the schedule for the plan -> the stage's settings (the
//! plan's overrides applied) -> one SFT or GRPO step (`step/`) -> log ->
//! evaluate and checkpoint when due. The step's metrics go to the schedule
//! with the next request for a plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lmmhost_sdk as sdk;

use super::checkpoint_store::replace_dir;
use super::eval::{table, EvalResult};
use super::experiment::Experiment;
use super::state::SummaryRow;
use super::step::{combine_ranks, grpo_step, sft_step};
use super::trainer::Trainer;
use crate::metrics::run_plots::{plot_run, SUMMARY_PNG};

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

pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    finish(train(exp, opts)?)
}

/// The steps of [`run`] without its end (no checkpoint, final model, plots
/// or summary): benchmarks time steps and need not write a model of any size.
/// Returns the steps run.
pub fn run_steps_only(exp: &Experiment, opts: &RunOptions) -> Result<u64> {
    // metrics.jsonl is appended to record by record: nothing left to write.
    Ok(train(exp, opts)?.state.global_step)
}

fn train<'e>(exp: &'e Experiment, opts: &RunOptions) -> Result<Trainer<'e>> {
    let mut t = Trainer::start(exp, opts.resume)?;
    if t.state.global_step == 0 && t.evals_at_boundaries() {
        t.evaluate("start")?;
    }
    loop {
        if opts.max_steps.is_some_and(|m| t.state.global_step >= m) {
            break;
        }
        for event in t.plugins.reload_changed(exp) {
            t.announce(&event);
        }
        let Some(plan) = t.next_plan()? else { break };
        let settings = exp.stage_settings(&plan)?;
        if plan.stage != t.state.stage {
            t.enter_stage(&plan)?;
        }
        t.configure_stage(&settings);
        let bytes = t.dp.bytes();
        let mut metrics = match plan.kind {
            sdk::StageKind::Sft => sft_step(&mut t, &plan, &settings)?.values(),
            sdk::StageKind::Grpo => grpo_step(&mut t, &plan, &settings)?.values(),
        };
        if t.dp.has_group() {
            // What this rank's collectives carried in the step.
            metrics.insert("dist/bytes".into(), (t.dp.bytes() - bytes) as f64);
            // The last update's gradient sum (ZeRO-2 holds a shard of it).
            metrics.insert("memory/grad_sum_bytes".into(), t.opt.grad_sum_bytes as f64);
            if let Some(share) = t.opt.grad_reduce_overlap {
                // The bytes of the gradient all-reduce started while the
                // last micro-batch's backward pass still ran.
                metrics.insert("dist/overlap".into(), share);
            }
        }
        // The largest rank's (ZeRO divides it among the ranks).
        metrics.insert(
            "memory/optimizer_state_bytes".into(),
            t.opt.state_bytes() as f64,
        );
        // Each rank measured its share of the step: the metrics of the whole.
        let metrics = combine_ranks(&t.dp.gather_metrics(metrics)?);
        t.finish_step(&plan, metrics)?;
        t.after_step()?;
    }
    t.bar.finish_and_clear();
    let finished = opts.max_steps.is_none_or(|m| t.state.global_step < m);
    if finished && t.evals_at_boundaries() && !t.state.stage.is_empty() {
        t.evaluate(&format!("after {}", t.state.stage))?;
    }
    Ok(t)
}

/// The end of the run: a last checkpoint unless the last step wrote one, the
/// final model, plots and the evaluation summary.
fn finish(mut t: Trainer) -> Result<RunSummary> {
    let every = t.exp.checkpoint.every;
    if every == 0 || !t.state.global_step.is_multiple_of(every) {
        t.checkpoint()?;
    }
    let final_model = t.out.join("final-model");
    // Rank 0 writes the run's files; the store it hosts lives until every
    // rank is done with it.
    if t.dp.is_main() {
        write_final_files(&t, &final_model)?;
    }
    t.dp.barrier()?;
    Ok(RunSummary {
        steps: t.state.global_step,
        warnings: t.warnings,
        output_dir: t.out,
        final_model,
        summary: t.state.summary,
    })
}

/// The final model, plots and the evaluation summary, and the run's last words.
fn write_final_files(t: &Trainer, final_model: &Path) -> Result<()> {
    save_final_model(t, final_model, false)?;
    if t.policy.lora.as_ref().is_some_and(|l| l.merge_on_save) {
        save_final_model(t, &t.out.join("final-model-merged"), true)?;
    }
    let mut summary_png = None;
    if t.exp.logging.plots {
        let written = plot_run(&t.out)?;
        eprintln!("plots: {}", join_paths(&written));
        summary_png = written.into_iter().find(|p| p.ends_with(SUMMARY_PNG));
    }
    if !t.state.summary.is_empty() {
        let text = summary_table(&t.state.summary);
        let path = t.out.join("summary.txt");
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("\n{text}");
        if let Some(png) = summary_png {
            println!(
                "held-out accuracy after each stage, as a picture: {}",
                png.display()
            );
        }
    }
    println!(
        "{} steps; model saved to {}; metrics in {}",
        t.state.global_step,
        final_model.display(),
        t.log.path().display()
    );
    Ok(())
}

/// Writes the final model beside `dir` first and moves it into place, so
/// that `dir` is either the previous final model or the complete new one.
/// `merged`: the adapters (if any) merged into a plain checkpoint.
fn save_final_model(t: &Trainer, dir: &Path, merged: bool) -> Result<()> {
    let tmp = dir.with_extension("incomplete");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    if merged {
        t.policy.save_merged(&tmp)?;
    } else {
        t.policy.save(&tmp)?;
    }
    replace_dir(&tmp, dir, &dir.with_extension("replaced"))
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Summary table of every evaluation of the run.
fn summary_table(rows: &[SummaryRow]) -> String {
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
                    per_rank: Vec::new(),
                },
            )
        })
        .collect();
    table(&results)
}
