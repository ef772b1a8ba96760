//! `lmmhost run`, `lmmhost eval` and `lmmhost plot`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use lmmhost::train::data_parallel::DataParallel;
use lmmhost::train::eval::{evaluate, table, write_records, EvalSettings};
use lmmhost::train::experiment::{Experiment, ModelInit, ModelSection, SpecialTokens};
use lmmhost::train::plugins::Reward;
use lmmhost::train::policy::Policy;
use lmmhost::train::run::{run, RunOptions};
use lmmhost_distributed::launch::LocalLaunch;
use lmmhost_distributed::LaunchEnv;
use lmmhost_plugin_host::{LoaderPlugin, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions};

#[derive(Args)]
pub struct RunArgs {
    /// The experiment file.
    experiment: PathBuf,
    /// Continue from the latest checkpoint in the run's checkpoint directory.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in total (the schedule may end sooner).
    #[arg(long)]
    max_steps: Option<u64>,
    /// KEY=VALUE over the file's settings (dotted key, TOML value), e.g.
    /// `--set model.path=/models/qwen --set 'datasets.mm.files=["a.jsonl"]'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Train data-parallel on N local ranks: starts N processes of this
    /// command, as `torchrun --nproc-per-node N --no-python lmmhost run ...`
    /// would (see docs/distributed.md).
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
}

pub fn run_cmd(args: RunArgs) -> Result<()> {
    let launched = LaunchEnv::from_env()?;
    let exp = Experiment::load_with_sets(&args.experiment, &args.sets)?;
    // A process group, even of one rank, rendezvouses through the launch
    // variables, so `--nproc 1` with one goes through the launcher too.
    let group_of_one = exp.distributed.group_of_one;
    match (args.nproc, &launched) {
        (Some(0), _) => bail!("--nproc 0: at least one rank is needed"),
        (None, None) if group_of_one => bail!(
            "distributed.group_of_one = true needs launched ranks: add --nproc 1 (or run under torchrun)"
        ),
        (Some(n), None) if n > 1 || group_of_one => {
            // This process only starts the ranks (each reruns this command
            // line, seeing RANK) and waits for them.
            let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
            let launch = LocalLaunch::current_exe(n, argv).context("starting the ranks")?;
            if let Err(e) = launch.run() {
                eprintln!("error: {e}");
                std::process::exit(e.exit_code());
            }
            return Ok(());
        }
        (Some(n), Some(env)) if env.world_size != n => bail!(
            "--nproc {n}, but this process was launched as rank {} of WORLD_SIZE={} (leave --nproc out under torchrun or srun)",
            env.rank,
            env.world_size
        ),
        _ => {}
    }
    let trained = run(
        &exp,
        &RunOptions {
            resume: args.resume,
            max_steps: args.max_steps,
        },
    );
    match &launched {
        Some(env) if env.world_size > 1 => {
            trained.with_context(|| format!("rank {} of {}", env.rank, env.world_size))?
        }
        _ => trained?,
    };
    Ok(())
}

#[derive(Args)]
pub struct PlotArgs {
    /// A run directory (the experiment's output_dir, holding metrics.jsonl).
    run_dir: PathBuf,
}

pub fn plot_cmd(args: PlotArgs) -> Result<()> {
    for p in lmmhost::metrics::run_plots::plot_run(&args.run_dir)? {
        println!("{}", p.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// A Hugging Face model directory (e.g. a run's final-model/).
    #[arg(long)]
    model: PathBuf,
    /// Dataset files or directories, granted read-only to the loader (repeatable).
    #[arg(long = "dataset")]
    datasets: Vec<PathBuf>,
    /// Loader component (.wasm), or a core loader's short name: jsonl, parquet, synthetic.
    #[arg(long, default_value = "jsonl")]
    loader: String,
    /// Loader config as TOML text, e.g. 'format = "easyr1"'.
    #[arg(long, default_value = "")]
    loader_config: String,
    /// Reward component(s) (.wasm or short name: math, format, choice, sokoban),
    /// optionally `=WEIGHT` (repeatable; default: math).
    #[arg(long = "reward")]
    rewards: Vec<String>,
    /// Reward config as TOML text (applies to every reward plugin).
    #[arg(long, default_value = "")]
    reward_config: String,
    /// Completions per prompt (pass@k needs k <= samples).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// k values for pass@k, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pass_k: Vec<usize>,
    /// Sampling temperature; 0 is greedy (needs --samples 1).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1024)]
    max_response_tokens: usize,
    #[arg(long, default_value_t = 4096)]
    max_prompt_tokens: usize,
    /// Evaluate the first N samples only.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// CPU threads generating row chunks at once (same answers for any
    /// value; see `model.workers` in docs/experiment.md).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokenise special tokens found in dataset text as written (by default
    /// such a sample is refused, as `datasets.NAME.special_tokens` does).
    #[arg(long)]
    tokenize_special_tokens: bool,
    /// Where the per-sample answers go (default: eval-<model dir name>.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A plugin file, or a core plugin's short name looked up next to the binary
/// (`target/release/lmmhost` -> `target/plugins/<kind>-<name>.wasm`).
fn resolve_plugin(arg: &str, kind: &str) -> Result<PathBuf> {
    let p = PathBuf::from(arg);
    if p.is_file() {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate the lmmhost binary")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("plugins"))
        .unwrap_or_default();
    let candidate = dir.join(format!("{kind}-{arg}.wasm"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "{kind} plugin {arg:?}: no such file, and no core plugin {} (build them with scripts/build-plugins.sh)",
        candidate.display()
    )
}

pub fn eval_cmd(args: EvalArgs) -> Result<()> {
    if args.temperature == 0.0 && args.samples > 1 {
        bail!(
            "--samples {} with --temperature 0: greedy samples are all identical",
            args.samples
        );
    }
    if let Some(k) = args.pass_k.iter().find(|&&k| k == 0 || k > args.samples) {
        bail!("--pass-k {k}: needs 1 <= k <= --samples ({})", args.samples);
    }
    let runtime = PluginRuntime::new(RuntimeOptions::default())?;
    let loader_path = resolve_plugin(&args.loader, "loader")?;
    let mut spec = PluginSpec::from_file("loader", &loader_path, &args.loader_config)?;
    spec.grants = args.datasets.clone();
    let loader = LoaderPlugin::new(&runtime, spec)?;
    let reward_args = if args.rewards.is_empty() {
        vec!["math".to_string()]
    } else {
        args.rewards.clone()
    };
    let mut rewards = Vec::new();
    for r in &reward_args {
        let (name, weight) = match r.rsplit_once('=') {
            Some((n, w)) => (
                n,
                w.parse::<f64>()
                    .with_context(|| format!("--reward {r}: weight {w:?} is not a number"))?,
            ),
            None => (r.as_str(), 1.0),
        };
        let path = resolve_plugin(name, "reward")?;
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| name.to_string());
        let spec = PluginSpec::from_file(&label, &path, &args.reward_config)?;
        rewards.push(Reward {
            name: label,
            weight,
            datasets: None,
            plugin: RewardPlugin::new(&runtime, spec)?,
        });
    }
    let section = ModelSection {
        init: ModelInit::Pretrained,
        device: args.device.clone(),
        dtype: args.dtype.clone(),
        workers: args.workers,
        ..ModelSection::new(args.model.clone())
    };
    let policy = Policy::load(&section, None, args.seed)?;
    let set = EvalSettings {
        samples: args.samples,
        greedy: args.temperature == 0.0,
        temperature: if args.temperature == 0.0 {
            1.0
        } else {
            args.temperature
        },
        max_response_tokens: args.max_response_tokens,
        max_prompt_tokens: args.max_prompt_tokens,
        limit: args.limit,
        pass_k: args.pass_k.clone(),
        batch_prompts: 16,
        seed: args.seed,
        special_tokens: if args.tokenize_special_tokens {
            SpecialTokens::Tokenize
        } else {
            SpecialTokens::Refuse
        },
        allow_special_tokens_with: "--tokenize-special-tokens".into(),
    };
    let name = args
        .datasets
        .first()
        .and_then(|d| d.file_stem())
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "dataset".into());
    let rewards = Arc::new(rewards);
    let one = DataParallel::single(policy.device);
    let result = evaluate(&one, &policy, &name, &loader, &rewards, &set)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let m = args
            .model
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        PathBuf::from(format!("eval-{m}.jsonl"))
    });
    if out.exists() {
        std::fs::remove_file(&out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    write_records(&out, &result.records)?;
    print!(
        "{}",
        table(&[(args.model.display().to_string(), result.clone())])
    );
    if result.skipped > 0 {
        println!(
            "{} prompts skipped: longer than --max-prompt-tokens",
            result.skipped
        );
    }
    println!("answers: {}", out.display());
    Ok(())
}
