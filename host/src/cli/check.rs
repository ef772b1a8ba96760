//! `lmmhost check`: everything a run would find wrong before it loads the
//! model.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lmmhost::train::experiment::{Experiment, ModelInit};
use lmmhost::train::plugins::Plugins;
use lmmhost_sdk as sdk;

#[derive(Args)]
pub struct CheckArgs {
    /// The experiment file.
    experiment: PathBuf,
    /// KEY=VALUE over the file's settings, as `lmmhost run --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// A schedule longer than this is checked over its first this-many steps.
const MAX_WALK_STEPS: u64 = 200_000;

/// Checks the file and its settings (every problem at once), the model
/// directory, every plugin started with its config, each dataset opened by
/// its loader, and the schedule walked plan by plan as a run would ask it,
/// each plan's datasets and setting overrides checked like the file's own.
pub fn check_cmd(args: CheckArgs) -> Result<()> {
    let exp = Experiment::load_with_sets(&args.experiment, &args.sets)?;
    if exp.model.init == ModelInit::Pretrained {
        let config = exp.model.path.join("config.json");
        if !config.is_file() {
            bail!(
                "model.path: {} has no config.json (is it a Hugging Face model directory?)",
                exp.model.path.display()
            );
        }
    }
    let mut plugins =
        Plugins::start(&exp).with_context(|| format!("{}", args.experiment.display()))?;
    let mut sizes = BTreeMap::new();
    for (name, loader) in &plugins.datasets {
        let n = loader.len();
        if n == 0 {
            bail!("datasets.{name}: the loader found no samples");
        }
        println!("dataset {name}: {n} samples");
        sizes.insert(name.clone(), n);
    }
    for (stage, kind, steps) in walk_schedule(&exp, &mut plugins, &sizes)? {
        println!("stage {stage} ({kind}): {steps} steps");
    }
    println!(
        "ok: {} ({} plugins, {} rewards)",
        args.experiment.display(),
        plugins.components.len(),
        exp.rewards.len()
    );
    Ok(())
}

/// Asks the schedule for its plans as the trainer does (the same
/// `dataset/<name>/len` and `batch/*` metrics, one step counted per
/// plan) until it ends, and checks each plan. Returns each stage run with its
/// kind and length.
fn walk_schedule(
    exp: &Experiment,
    plugins: &mut Plugins,
    sizes: &BTreeMap<String, u64>,
) -> Result<Vec<(String, &'static str, u64)>> {
    let mut metrics: Vec<(String, f64)> = sizes
        .iter()
        .map(|(name, n)| (format!("dataset/{name}/len"), *n as f64))
        .collect();
    metrics.extend(exp.batch_metrics());
    let mut stages: Vec<(String, &'static str, u64)> = Vec::new();
    let (mut stage, mut stage_step) = (String::new(), 0u64);
    let mut checked = HashSet::new();
    for global_step in 0..MAX_WALK_STEPS {
        let state = sdk::TrainState {
            global_step,
            stage: stage.clone(),
            stage_step,
            metrics: metrics.clone(),
        };
        let plan = plugins.schedule.next_plan(&state).with_context(|| {
            format!(
                "schedule {:?}: plan for step {}",
                exp.schedule.plugin,
                global_step + 1
            )
        })?;
        let Some(plan) = plan else {
            if stages.is_empty() {
                bail!(
                    "schedule {:?}: the first plan is `none`: the run would train nothing",
                    exp.schedule.plugin
                );
            }
            return Ok(stages);
        };
        // Plans repeat within a stage; each different one is checked once.
        if checked.insert(serde_json::to_string(&plan)?) {
            check_plan(exp, &plan)?;
        }
        if plan.stage != stage {
            let kind = match plan.kind {
                sdk::StageKind::Sft => "sft",
                sdk::StageKind::Grpo => "grpo",
            };
            stages.push((plan.stage.clone(), kind, 0));
            stage = plan.stage.clone();
            stage_step = 0;
        }
        stage_step += 1;
        if let Some(last) = stages.last_mut() {
            last.2 += 1;
        }
    }
    println!("(the schedule was checked over its first {MAX_WALK_STEPS} steps)");
    Ok(stages)
}

/// A plan's datasets exist and its overrides make valid settings.
fn check_plan(exp: &Experiment, plan: &sdk::Plan) -> Result<()> {
    for (name, weight) in &plan.datasets {
        if !exp.datasets.contains_key(name) {
            bail!(
                "schedule: stage {:?} draws from dataset {name:?}, which the experiment's [datasets] does not define (it has: {})",
                plan.stage,
                exp.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if !weight.is_finite() || *weight < 0.0 {
            bail!(
                "schedule: stage {:?}: dataset {name:?} has weight {weight}",
                plan.stage
            );
        }
    }
    exp.stage_settings(plan)?;
    Ok(())
}
