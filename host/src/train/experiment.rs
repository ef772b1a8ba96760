//! The experiment file: one TOML document that names the model, the plugins,
//! the datasets, the schedule and every setting of the run. Parsed with serde
//! (unknown keys and wrong types are errors that name the key and line), then
//! checked as a whole (`validate`) before any model is loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::rl::advantage::AdvantageEstimator;
use crate::rl::pad::PadConfig;
use crate::rl::schedules::LrDecay;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Used for the run directory name and in logs.
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    /// Where metrics, plots, checkpoints and the final model go (default `runs/<name>`).
    pub output_dir: Option<PathBuf>,
    pub model: ModelSection,
    /// Plugins by name; datasets, rewards and the schedule refer to these names.
    pub plugins: BTreeMap<String, PluginEntry>,
    /// Reward plugins whose totals are summed with weights; components are logged one by one.
    pub rewards: Vec<RewardRef>,
    pub datasets: BTreeMap<String, DatasetEntry>,
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub rollout: Rollout,
    #[serde(default)]
    pub optim: Optim,
    #[serde(default)]
    pub grpo: Grpo,
    #[serde(default)]
    pub checkpoint: Checkpoint,
    #[serde(default)]
    pub logging: Logging,
    pub eval: Option<Eval>,
    #[serde(default)]
    pub sft: Sft,
    /// Who may sign the bundles this experiment uses.
    pub trust: Option<Trust>,
    /// The file as parsed TOML: stage overrides (`extra`) are applied to it and
    /// the sections re-read, so every experiment key can be overridden per stage.
    #[serde(skip)]
    pub raw: toml::Table,
}

/// Settings of SFT stages (the loss covers assistant tokens only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sft {
    /// Conversations per optimizer step (default: rollout.prompts_per_step).
    pub batch_size: Option<usize>,
    /// Conversations longer than this are skipped (counted in the metrics).
    pub max_tokens: usize,
}

impl Default for Sft {
    fn default() -> Self {
        Sft {
            batch_size: None,
            max_tokens: 2048,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json).
    pub path: PathBuf,
    /// `pretrained` loads the weights; `random` initialises them from config.json (tiny models, tests).
    #[serde(default)]
    pub init: ModelInit,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// CPU threads for libtorch (default: all cores).
    pub threads: Option<usize>,
    /// CPU only: how many threads a rollout, a log-prob pass and an update
    /// split their rows over, each with `threads / workers` libtorch threads
    /// (small models keep every core busier this way). Same samples for any
    /// value; default 1.
    #[serde(default = "one_worker")]
    pub workers: usize,
}

fn one_worker() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelInit {
    #[default]
    Pretrained,
    Random,
}

fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "f32".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// A component file ...
    pub wasm: Option<PathBuf>,
    /// ... or a bundle and the name of the component in it.
    pub bundle: Option<PathBuf>,
    pub component: Option<String>,
    /// The plugin's own settings, passed through as TOML text.
    #[serde(default)]
    pub config: toml::Table,
    #[serde(default)]
    pub limits: PluginLimits,
    #[serde(default)]
    pub on_error: OnError,
    /// Reload the component at the next step boundary when the file changes.
    #[serde(default)]
    pub watch: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Parallel instances (reward plugins); default: one per core.
    pub instances: Option<usize>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            call_timeout_ms: default_call_timeout_ms(),
            memory_mb: default_memory_mb(),
            instances: None,
        }
    }
}

fn default_call_timeout_ms() -> u64 {
    10_000
}
fn default_memory_mb() -> u64 {
    512
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Stop the run with an error naming the plugin, the call and the item.
    #[default]
    Abort,
    /// Score a failed item 0 (all components 0), log it and go on.
    Zero,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardRef {
    pub plugin: String,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// Name of a loader plugin in `[plugins]`.
    pub loader: String,
    /// Files or directories granted to the loader, read-only (none for
    /// generators such as loader-synthetic).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Loader settings for this dataset, merged over the plugin's `config`.
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Name of a schedule plugin in `[plugins]`.
    pub plugin: String,
    /// A TOML file with the schedule's config (e.g. configs/schedules/*.toml),
    /// merged over the plugin's `config` table.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    pub group_size: u32,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 disables top-k.
    pub top_k: u32,
    pub max_prompt_tokens: usize,
    pub max_response_tokens: usize,
    /// EOS is blocked until this many tokens were generated (benchmarks fix lengths with it).
    pub min_new_tokens: usize,
    pub prompts_per_step: usize,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            group_size: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_prompt_tokens: 1024,
            max_response_tokens: 512,
            min_new_tokens: 0,
            prompts_per_step: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optim {
    pub lr: f64,
    pub lr_decay: LrDecay,
    pub warmup_steps: u64,
    /// Floor of the decay as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Optimizer steps the decay spans (required unless `lr_decay = "constant"`).
    pub decay_steps: Option<u64>,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Max global gradient norm; 0 disables clipping.
    pub grad_clip: f64,
    /// Sequences per forward/backward; gradients accumulate over the batch.
    pub micro_batch_size: usize,
    /// Optimizer steps per rollout batch (PPO-style epochs split the batch).
    pub updates_per_batch: usize,
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            lr: 1e-6,
            lr_decay: LrDecay::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            decay_steps: None,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
            grad_clip: 1.0,
            micro_batch_size: 8,
            updates_per_batch: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAggregation {
    /// Mean over every response token of the batch.
    TokenMean,
    /// Mean over sequences of each sequence's token mean.
    SeqMeanTokenMean,
    /// Dr. GRPO: each sequence's token sum divided by a constant length, mean over sequences.
    SeqSumConstant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlEstimator {
    K1,
    K2,
    K3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlPlacement {
    /// `loss += coef * KL` per token.
    Loss,
    /// `reward -= coef * KL` per token, before advantages (LMM-R1).
    Reward,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kl {
    /// 0 skips the reference model entirely.
    pub coef: f64,
    pub estimator: KlEstimator,
    pub placement: KlPlacement,
}

impl Default for Kl {
    fn default() -> Self {
        Kl {
            coef: 0.0,
            estimator: KlEstimator::K3,
            placement: KlPlacement::Loss,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntropyBonus {
    pub coef: f64,
    pub warmup_steps: u64,
    /// Multiplied into the coefficient after every update past warmup.
    pub decay: f64,
}

impl Default for EntropyBonus {
    fn default() -> Self {
        EntropyBonus {
            coef: 0.0,
            warmup_steps: 0,
            decay: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicSampling {
    pub enabled: bool,
    /// Extra rounds of generation allowed to fill the batch.
    pub max_retries: u32,
    /// Score component whose groups must not be all equal (`total` for the weighted sum).
    pub metric: String,
}

impl Default for DynamicSampling {
    fn default() -> Self {
        DynamicSampling {
            enabled: false,
            max_retries: 3,
            metric: "accuracy".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpo {
    pub advantage: AdvantageEstimator,
    pub clip_low: f64,
    pub clip_high: f64,
    /// Dual clip constant for negative advantages (e.g. 3.0); unset disables it.
    pub dual_clip: Option<f64>,
    pub loss_aggregation: LossAggregation,
    /// The constant of `seq-sum-constant` (default: rollout.max_response_tokens).
    pub loss_constant_length: Option<usize>,
    pub kl: Kl,
    pub entropy: EntropyBonus,
    pub pad: PadConfig,
    pub dynamic_sampling: DynamicSampling,
    pub freeze_vision: bool,
    pub freeze_language: bool,
}

impl Default for Grpo {
    fn default() -> Self {
        Grpo {
            advantage: AdvantageEstimator::GroupNorm,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            loss_aggregation: LossAggregation::TokenMean,
            loss_constant_length: None,
            kl: Kl::default(),
            entropy: EntropyBonus::default(),
            pad: PadConfig::default(),
            dynamic_sampling: DynamicSampling::default(),
            freeze_vision: false,
            freeze_language: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checkpoint {
    /// Default: `<output_dir>/checkpoints`.
    pub dir: Option<PathBuf>,
    /// Every N optimizer steps; 0 saves only at the end.
    pub every: u64,
    pub keep_last: usize,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            dir: None,
            every: 0,
            keep_last: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub tensorboard: bool,
    pub plots: bool,
    pub progress: bool,
    /// Expected steps of the whole run, for the progress bar's ETA (the
    /// schedule decides the real length).
    pub total_steps: Option<u64>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            tensorboard: true,
            plots: true,
            progress: true,
            total_steps: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    /// Dataset names (from `[datasets]`) to evaluate on.
    pub datasets: Vec<String>,
    /// Every N optimizer steps; 0 only at stage boundaries and the end.
    #[serde(default)]
    pub every: u64,
    /// Also evaluate before the first step and at every stage change.
    #[serde(default = "yes")]
    pub at_stage_boundaries: bool,
    /// Samples per prompt; pass@k for each k in `pass_k` (k <= samples).
    #[serde(default = "one_usize")]
    pub samples: usize,
    #[serde(default = "default_pass_k")]
    pub pass_k: Vec<usize>,
    /// Greedy decoding (samples must be 1) or sampling at `temperature`.
    #[serde(default = "yes")]
    pub greedy: bool,
    #[serde(default = "one")]
    pub temperature: f64,
    pub max_response_tokens: Option<usize>,
    /// Evaluate at most this many samples per dataset.
    pub limit: Option<usize>,
}

fn yes() -> bool {
    true
}
fn one_usize() -> usize {
    1
}
fn default_pass_k() -> Vec<usize> {
    vec![1]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    pub trusted_keys: PathBuf,
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// Makes the relative paths of a base file absolute against its own
/// directory, so that a file extending it from elsewhere keeps them working.
fn absolutize_paths(t: &mut toml::Table, dir: &Path) {
    let fix = |v: &mut toml::Value| {
        if let Some(p) = v.as_str().map(PathBuf::from).filter(|p| p.is_relative()) {
            *v = toml::Value::String(dir.join(p).display().to_string());
        }
    };
    let fix_in = |t: &mut toml::Table, keys: &[&str]| {
        for k in keys {
            match t.get_mut(*k) {
                Some(toml::Value::Array(a)) => a.iter_mut().for_each(fix),
                Some(v) => fix(v),
                None => {}
            }
        }
    };
    fix_in(t, &["output_dir"]);
    for (section, keys) in [
        ("model", &["path"][..]),
        ("schedule", &["file"][..]),
        ("trust", &["trusted_keys"][..]),
        ("checkpoint", &["dir"][..]),
    ] {
        if let Some(toml::Value::Table(s)) = t.get_mut(section) {
            fix_in(s, keys);
        }
    }
    for (section, keys) in [
        ("plugins", &["wasm", "bundle"][..]),
        ("datasets", &["files"][..]),
    ] {
        if let Some(toml::Value::Table(s)) = t.get_mut(section) {
            for (_, entry) in s.iter_mut() {
                if let toml::Value::Table(e) = entry {
                    fix_in(e, keys);
                }
            }
        }
    }
}

/// Follows `extends` chains: the merged document as TOML text and the files
/// it came from, or `None` when `text` extends nothing.
fn resolve_extends(path: &Path, text: &str, depth: usize) -> Result<Option<(String, Vec<String>)>> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let Some(parent) = table.remove("extends") else {
        return Ok(None);
    };
    if depth >= 8 {
        bail!("{}: `extends` nests more than 8 files deep", path.display());
    }
    let rel = parent
        .as_str()
        .with_context(|| format!("{}: key `extends` must be a file path", path.display()))?;
    let base_path = path.parent().unwrap_or(Path::new(".")).join(rel);
    let base_text = std::fs::read_to_string(&base_path).with_context(|| {
        format!(
            "{}: key `extends`: cannot read {}",
            path.display(),
            base_path.display()
        )
    })?;
    let (base_text, mut chain) = match resolve_extends(&base_path, &base_text, depth + 1)? {
        Some(x) => x,
        None => (base_text, Vec::new()),
    };
    chain.insert(0, base_path.display().to_string());
    let mut base: toml::Table = base_text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", base_path.display()))?;
    let base_dir = std::path::absolute(base_path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot resolve {}", base_path.display()))?;
    absolutize_paths(&mut base, &base_dir);
    let merged = crate::train::plugins::merge_tables(&base, &table);
    Ok(Some((toml::to_string(&merged)?, chain)))
}

/// Parses the TOML text; the error names the dotted key path (`optim.lr`), the
/// line and what was expected.
fn parse(text: &str) -> std::result::Result<Experiment, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    let mut exp: Experiment = serde_path_to_error::deserialize(de).map_err(path_error)?;
    exp.raw = text.parse::<toml::Table>().map_err(|e| e.to_string())?;
    Ok(exp)
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> String {
    let key = e.path().to_string();
    let inner = e.into_inner().to_string();
    if key.is_empty() || key == "." {
        inner
    } else {
        format!("key `{key}`: {inner}")
    }
}

/// The settings one step runs with: the experiment file's sections with the
/// schedule plan's overrides applied.
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub rollout: Rollout,
    pub optim: Optim,
    pub grpo: Grpo,
    pub sft: Sft,
}

/// The sections a stage may change (`extra` keys must fall inside them).
#[derive(Deserialize)]
struct Sections {
    #[serde(default)]
    rollout: Rollout,
    #[serde(default)]
    optim: Optim,
    #[serde(default)]
    grpo: Grpo,
    #[serde(default)]
    sft: Sft,
}

const STAGE_SECTIONS: [&str; 4] = ["rollout", "optim", "grpo", "sft"];

/// Sets `value` (TOML value text) at the dotted `key` of `table`.
fn set_dotted(table: &mut toml::Table, key: &str, value: &str) -> Result<()> {
    let parsed: toml::Table = format!("v = {value}")
        .parse()
        .map_err(|e| anyhow::anyhow!("value {value:?} is not a TOML value: {e}"))?;
    let value = parsed.get("v").cloned().context("empty value")?;
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().context("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .with_context(|| format!("`{p}` in `{key}` is not a table"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

impl Experiment {
    /// The effective settings for `plan`: `extra` first (any key of
    /// rollout/optim/grpo/sft, re-read with the same checks as the file), then
    /// the typed overrides.
    pub fn stage_settings(&self, plan: &lmmhost_sdk::Plan) -> Result<StageSettings> {
        let o = &plan.overrides;
        let ctx = || format!("stage {:?}: overrides", plan.stage);
        let sections: Sections = if o.extra.is_empty() {
            Sections {
                rollout: self.rollout.clone(),
                optim: self.optim.clone(),
                grpo: self.grpo.clone(),
                sft: self.sft.clone(),
            }
        } else {
            let mut raw = toml::Table::new();
            for s in STAGE_SECTIONS {
                if let Some(v) = self.raw.get(s) {
                    raw.insert(s.to_string(), v.clone());
                }
            }
            for (key, value) in &o.extra {
                let section = key.split('.').next().unwrap_or_default();
                if !STAGE_SECTIONS.contains(&section) || !key.contains('.') {
                    bail!(
                        "{}: extra key {key:?} cannot change per stage (allowed: {})",
                        ctx(),
                        STAGE_SECTIONS.map(|s| format!("{s}.*")).join(", ")
                    );
                }
                set_dotted(&mut raw, key, value)
                    .with_context(|| format!("{}: extra key {key:?}", ctx()))?;
            }
            serde_path_to_error::deserialize(toml::Value::Table(raw))
                .map_err(|e| anyhow::anyhow!("{}: {}", ctx(), path_error(e)))?
        };
        let Sections {
            mut rollout,
            mut optim,
            mut grpo,
            sft,
        } = sections;
        if let Some(v) = o.learning_rate {
            optim.lr = v;
        }
        if let Some(v) = o.kl_coef {
            grpo.kl.coef = v;
        }
        if let Some(v) = o.temperature {
            rollout.temperature = v;
        }
        if let Some(v) = o.top_p {
            rollout.top_p = v;
        }
        if let Some(v) = o.group_size {
            rollout.group_size = v;
        }
        if let Some(v) = o.entropy_coef {
            grpo.entropy.coef = v;
        }
        if let Some(v) = o.entropy_warmup_steps {
            grpo.entropy.warmup_steps = v;
        }
        if let Some(v) = o.entropy_decay {
            grpo.entropy.decay = v;
        }
        if let Some(v) = o.freeze_vision {
            grpo.freeze_vision = v;
        }
        if let Some(v) = o.freeze_language {
            grpo.freeze_language = v;
        }
        if let Some(v) = o.dynamic_sampling {
            grpo.dynamic_sampling.enabled = v;
        }
        let p = &o.pad;
        let pad = &mut grpo.pad;
        pad.enabled = p.enabled.unwrap_or(pad.enabled);
        pad.t_low = p.t_low.unwrap_or(pad.t_low);
        pad.t_high = p.t_high.unwrap_or(pad.t_high);
        pad.ratio = p.ratio.unwrap_or(pad.ratio);
        pad.tau_start = p.tau_start.unwrap_or(pad.tau_start);
        pad.tau_end = p.tau_end.unwrap_or(pad.tau_end);
        let settings = StageSettings {
            rollout,
            optim,
            grpo,
            sft,
        };
        let problems = settings.problems();
        if !problems.is_empty() {
            bail!("{}: {}", ctx(), problems.join("; "));
        }
        Ok(settings)
    }
}

impl StageSettings {
    /// Impossible combinations (also checked for the file's own settings).
    pub fn problems(&self) -> Vec<String> {
        let (r, o, g) = (&self.rollout, &self.optim, &self.grpo);
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_string());
            }
        };
        check(r.group_size >= 1, "rollout.group_size must be >= 1");
        check(r.temperature > 0.0, "rollout.temperature must be > 0");
        check(
            r.top_p > 0.0 && r.top_p <= 1.0,
            "rollout.top_p must be in (0, 1]",
        );
        check(
            o.lr >= 0.0 && o.lr.is_finite(),
            "optim.lr must be a finite number >= 0",
        );
        check(
            g.clip_low > 0.0 && g.clip_low < 1.0,
            "grpo.clip_low must be in (0, 1)",
        );
        check(g.clip_high > 0.0, "grpo.clip_high must be > 0");
        check(
            g.dual_clip.is_none_or(|c| c > 1.0),
            "grpo.dual_clip must be > 1",
        );
        check(
            o.micro_batch_size >= 1,
            "optim.micro_batch_size must be >= 1",
        );
        check(
            o.updates_per_batch >= 1,
            "optim.updates_per_batch must be >= 1",
        );
        check(g.kl.coef >= 0.0, "grpo.kl.coef must be >= 0");
        check(g.entropy.coef >= 0.0, "grpo.entropy.coef must be >= 0");
        check(
            g.entropy.decay > 0.0 && g.entropy.decay <= 1.0,
            "grpo.entropy.decay must be in (0, 1]",
        );
        check(
            !(g.freeze_vision && g.freeze_language),
            "grpo.freeze_vision and grpo.freeze_language: freezing both leaves nothing to train",
        );
        check(
            !(g.pad.enabled && g.dynamic_sampling.enabled),
            "grpo.pad.enabled and grpo.dynamic_sampling.enabled: choose one remedy for zero-advantage groups",
        );
        check(
            !(g.advantage == AdvantageEstimator::GroupNorm && r.group_size == 1),
            "rollout.group_size = 1 with grpo.advantage = \"group-norm\": a group of one has no advantage",
        );
        if let Err(e) = g.pad.validate() {
            out.push(format!("grpo.{e}"));
        }
        out
    }
}

impl Experiment {
    /// Reads and checks an experiment file. Relative paths inside it are
    /// resolved against the file's directory.
    ///
    /// `extends = "base.toml"` at the top of a file starts from that file (its
    /// relative paths resolve against its own directory) and overrides it key
    /// by key, tables merged.
    pub fn load(path: &Path) -> Result<Experiment> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        let (text, origin) = match resolve_extends(path, &text, 0)? {
            Some(merged) => (
                merged.0,
                format!("{} (merged over {})", path.display(), merged.1.join(", ")),
            ),
            None => (text, path.display().to_string()),
        };
        let mut exp = parse(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        exp.resolve_paths(base);
        exp.validate()
            .with_context(|| format!("invalid experiment file {}", path.display()))?;
        Ok(exp)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.model.path);
        for entry in self.plugins.values_mut() {
            entry.wasm.as_mut().map(fix);
            entry.bundle.as_mut().map(fix);
        }
        for ds in self.datasets.values_mut() {
            ds.files.iter_mut().for_each(fix);
        }
        if let Some(t) = self.trust.as_mut() {
            fix(&mut t.trusted_keys);
        }
        self.schedule.file.as_mut().map(fix);
        let out = self
            .output_dir
            .get_or_insert_with(|| PathBuf::from("runs").join(&self.name));
        fix(out);
        if let Some(d) = self.checkpoint.dir.as_mut() {
            fix(d);
        }
    }

    /// Every problem found, one per line, each naming its key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };
        check(
            self.model.path.exists(),
            format!("model.path: {} does not exist", self.model.path.display()),
        );
        check(
            self.model.threads != Some(0),
            "model.threads: must be at least 1 (leave it out for all cores)".into(),
        );
        check(
            self.model.workers >= 1,
            "model.workers: must be at least 1".into(),
        );
        for (name, p) in &self.plugins {
            match (&p.wasm, &p.bundle) {
                (Some(w), None) => check(
                    w.is_file(),
                    format!("plugins.{name}.wasm: file not found: {}", w.display()),
                ),
                (None, Some(b)) => {
                    check(
                        b.is_file(),
                        format!("plugins.{name}.bundle: file not found: {}", b.display()),
                    );
                    check(
                        p.component.is_some(),
                        format!("plugins.{name}.component: required with `bundle`"),
                    );
                    check(
                        self.trust.is_some(),
                        format!("plugins.{name}.bundle: needs a [trust] section with trusted_keys"),
                    );
                }
                _ => check(
                    false,
                    format!("plugins.{name}: set exactly one of `wasm` or `bundle`"),
                ),
            }
            check(
                p.limits.call_timeout_ms > 0,
                format!("plugins.{name}.limits.call_timeout_ms must be > 0"),
            );
            check(
                p.limits.memory_mb >= 1,
                format!("plugins.{name}.limits.memory_mb must be >= 1"),
            );
        }
        let plugin = |n: &str| self.plugins.contains_key(n);
        check(
            !self.rewards.is_empty(),
            "rewards: at least one reward plugin is needed".into(),
        );
        for (i, r) in self.rewards.iter().enumerate() {
            check(
                plugin(&r.plugin),
                format!(
                    "rewards[{i}].plugin: no plugin named {:?} in [plugins]",
                    r.plugin
                ),
            );
            check(
                r.weight.is_finite(),
                format!("rewards[{i}].weight must be a finite number"),
            );
        }
        for (name, d) in &self.datasets {
            check(
                plugin(&d.loader),
                format!(
                    "datasets.{name}.loader: no plugin named {:?} in [plugins]",
                    d.loader
                ),
            );
            for f in &d.files {
                check(
                    f.exists(),
                    format!("datasets.{name}.files: {} does not exist", f.display()),
                );
            }
        }
        if let Some(f) = &self.schedule.file {
            check(
                f.is_file(),
                format!("schedule.file: file not found: {}", f.display()),
            );
        }
        check(
            plugin(&self.schedule.plugin),
            format!(
                "schedule.plugin: no plugin named {:?} in [plugins]",
                self.schedule.plugin
            ),
        );

        let r = &self.rollout;
        check(
            r.max_response_tokens >= 1,
            "rollout.max_response_tokens must be >= 1".into(),
        );
        check(
            r.min_new_tokens <= r.max_response_tokens,
            "rollout.min_new_tokens must be <= rollout.max_response_tokens".into(),
        );
        check(
            r.prompts_per_step >= 1,
            "rollout.prompts_per_step must be >= 1".into(),
        );

        let o = &self.optim;
        check(
            o.betas.iter().all(|b| (0.0..1.0).contains(b)),
            "optim.betas must both be in [0, 1)".into(),
        );
        check(
            o.grad_clip >= 0.0,
            "optim.grad_clip must be >= 0 (0 disables clipping)".into(),
        );
        check(
            (0.0..=1.0).contains(&o.min_lr_ratio),
            "optim.min_lr_ratio must be in [0, 1]".into(),
        );
        check(
            o.lr_decay == LrDecay::Constant || o.decay_steps.is_some_and(|n| n > 0),
            "optim.decay_steps: required (> 0) when optim.lr_decay is not \"constant\"".into(),
        );
        check(
            self.sft.batch_size != Some(0),
            "sft.batch_size must be >= 1".into(),
        );

        let own = StageSettings {
            rollout: self.rollout.clone(),
            optim: self.optim.clone(),
            grpo: self.grpo.clone(),
            sft: self.sft.clone(),
        };
        for p in own.problems() {
            check(false, p);
        }
        if let Some(e) = &self.eval {
            for d in &e.datasets {
                check(
                    self.datasets.contains_key(d),
                    format!("eval.datasets: no dataset named {d:?} in [datasets]"),
                );
            }
            check(e.samples >= 1, "eval.samples must be >= 1".into());
            check(
                !(e.greedy && e.samples > 1),
                "eval.greedy = true with eval.samples > 1: greedy samples are all identical".into(),
            );
            for k in &e.pass_k {
                check(
                    *k >= 1 && *k <= e.samples,
                    format!(
                        "eval.pass_k: k = {k} needs 1 <= k <= eval.samples ({})",
                        e.samples
                    ),
                );
            }
        }
        if let Some(t) = &self.trust {
            check(
                t.trusted_keys.is_file(),
                format!(
                    "trust.trusted_keys: file not found: {}",
                    t.trusted_keys.display()
                ),
            );
        }
        check(
            self.checkpoint.keep_last >= 1,
            "checkpoint.keep_last must be >= 1".into(),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "{} problem(s):\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid experiment in a temporary directory (with the files it names).
    fn setup(extra: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "model/config.json",
            "p/math.wasm",
            "p/jsonl.wasm",
            "p/staged.wasm",
            "data/train.jsonl",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let text = format!(
            r#"
name = "t"
[model]
path = "model"
[plugins.math]
wasm = "p/math.wasm"
config = {{ weight = 1.0 }}
[plugins.jsonl]
wasm = "p/jsonl.wasm"
[plugins.staged]
wasm = "p/staged.wasm"
[[rewards]]
plugin = "math"
[datasets.train]
loader = "jsonl"
files = ["data/train.jsonl"]
[schedule]
plugin = "staged"
{extra}
"#
        );
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn error_of(extra: &str) -> String {
        let (_d, p) = setup(extra);
        format!("{:#}", Experiment::load(&p).unwrap_err())
    }

    #[test]
    fn minimal_file_loads_with_defaults_and_resolved_paths() {
        let (dir, p) = setup("");
        let e = Experiment::load(&p).unwrap();
        assert_eq!(e.model.path, dir.path().join("model"));
        assert_eq!(e.rollout.group_size, 8);
        assert_eq!(e.grpo.kl.estimator, KlEstimator::K3);
        assert_eq!(e.output_dir.unwrap(), dir.path().join("runs/t"));
        assert_eq!(e.plugins["math"].config["weight"].as_float(), Some(1.0));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let msg = error_of("[rollout]\ngroup_sise = 4\n");
        assert!(msg.contains("group_sise") && msg.contains("line"), "{msg}");
    }

    #[test]
    fn extends_overrides_a_base_file_key_by_key() {
        let (dir, _p) = setup("[rollout]\ngroup_size = 4\ntemperature = 0.7\n");
        // From another directory: the base's relative paths stay the base's.
        let other = dir.path().join("variants");
        std::fs::create_dir_all(&other).unwrap();
        let child = other.join("child.toml");
        std::fs::write(
            &child,
            "extends = \"../exp.toml\"\nname = \"child\"\n[rollout]\ngroup_size = 16\n",
        )
        .unwrap();
        let e = Experiment::load(&child).unwrap();
        assert_eq!(e.name, "child");
        assert_eq!(e.rollout.group_size, 16);
        assert_eq!(e.rollout.temperature, 0.7);
        assert_eq!(e.model.path, other.join("../model"));
        assert!(e.model.path.is_dir());
        // Paths the base leaves to defaults follow the extending file.
        assert_eq!(e.output_dir.clone().unwrap(), other.join("runs/child"));
        std::fs::write(
            &child,
            "extends = \"../exp.toml\"\n[rollout]\ngroup_sise = 16\n",
        )
        .unwrap();
        let msg = format!("{:#}", Experiment::load(&child).unwrap_err());
        assert!(
            msg.contains("group_sise") && msg.contains("merged over"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let msg = error_of("[optim]\nlr = \"fast\"\n");
        assert!(msg.contains("lr") || msg.contains("invalid type"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn impossible_combinations_are_rejected_together() {
        let msg = error_of(
            "[grpo]\nfreeze_vision = true\nfreeze_language = true\n[grpo.pad]\nenabled = true\n[grpo.dynamic_sampling]\nenabled = true\n[eval]\ndatasets = [\"nope\"]\nsamples = 2\n",
        );
        assert!(
            msg.contains("grpo.freeze_vision and grpo.freeze_language"),
            "{msg}"
        );
        assert!(msg.contains("choose one remedy"), "{msg}");
        assert!(
            msg.contains("eval.datasets: no dataset named \"nope\""),
            "{msg}"
        );
        assert!(
            msg.contains("eval.greedy = true with eval.samples > 1"),
            "{msg}"
        );
    }

    #[test]
    fn zero_threads_or_workers_are_named() {
        let (_d, p) = setup("");
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "path = \"model\"",
            "path = \"model\"\nthreads = 0\nworkers = 0",
        );
        std::fs::write(&p, text).unwrap();
        let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
        assert!(msg.contains("model.threads: must be at least 1"), "{msg}");
        assert!(msg.contains("model.workers: must be at least 1"), "{msg}");
    }

    #[test]
    fn missing_files_and_dangling_names() {
        let (dir, p) = setup("");
        std::fs::remove_file(dir.path().join("p/math.wasm")).unwrap();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("loader = \"jsonl\"", "loader = \"jsnl\"");
        std::fs::write(&p, text).unwrap();
        let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
        assert!(msg.contains("plugins.math.wasm: file not found"), "{msg}");
        assert!(
            msg.contains("datasets.train.loader: no plugin named \"jsnl\""),
            "{msg}"
        );
    }

    fn plan(overrides: lmmhost_sdk::Overrides) -> lmmhost_sdk::Plan {
        lmmhost_sdk::Plan {
            stage: "mgt".into(),
            kind: lmmhost_sdk::StageKind::Grpo,
            datasets: vec![("train".into(), 1.0)],
            overrides,
        }
    }

    #[test]
    fn stage_overrides_typed_and_extra() {
        let (_d, p) = setup("[grpo]\nclip_high = 0.3\n[rollout]\ntop_k = 5\n");
        let e = Experiment::load(&p).unwrap();
        let mut o = lmmhost_sdk::Overrides {
            learning_rate: Some(4e-7),
            kl_coef: Some(1e-3),
            group_size: Some(16),
            freeze_vision: Some(true),
            ..Default::default()
        };
        o.pad.enabled = Some(true);
        o.pad.ratio = Some(0.25);
        o.extra = vec![
            ("grpo.kl.estimator".into(), "\"k1\"".into()),
            ("grpo.kl.placement".into(), "\"reward\"".into()),
            ("optim.micro_batch_size".into(), "4".into()),
        ];
        let s = e.stage_settings(&plan(o)).unwrap();
        assert_eq!(s.optim.lr, 4e-7);
        assert_eq!(s.optim.micro_batch_size, 4);
        assert_eq!(s.grpo.kl.coef, 1e-3);
        assert_eq!(s.grpo.kl.estimator, KlEstimator::K1);
        assert_eq!(s.grpo.kl.placement, KlPlacement::Reward);
        assert_eq!(s.rollout.group_size, 16);
        assert!(s.grpo.freeze_vision && s.grpo.pad.enabled);
        assert_eq!(s.grpo.pad.ratio, 0.25);
        // The file's own settings survive the re-read.
        assert_eq!(s.grpo.clip_high, 0.3);
        assert_eq!(s.rollout.top_k, 5);
    }

    #[test]
    fn bad_stage_overrides_are_named() {
        let (_d, p) = setup("");
        let e = Experiment::load(&p).unwrap();
        let with_extra = |k: &str, v: &str| {
            let o = lmmhost_sdk::Overrides {
                extra: vec![(k.into(), v.into())],
                ..Default::default()
            };
            format!("{:#}", e.stage_settings(&plan(o)).unwrap_err())
        };
        let msg = with_extra("model.path", "\"x\"");
        assert!(
            msg.contains("\"model.path\" cannot change per stage"),
            "{msg}"
        );
        let msg = with_extra("grpo.clip_lo", "0.1");
        assert!(
            msg.contains("stage \"mgt\"") && msg.contains("clip_lo"),
            "{msg}"
        );
        let msg = with_extra("grpo.clip_low", "1.5");
        assert!(msg.contains("grpo.clip_low must be in (0, 1)"), "{msg}");
        let o = lmmhost_sdk::Overrides {
            dynamic_sampling: Some(true),
            pad: lmmhost_sdk::PadOverrides {
                enabled: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        let msg = format!("{:#}", e.stage_settings(&plan(o)).unwrap_err());
        assert!(msg.contains("choose one remedy"), "{msg}");
    }
}
