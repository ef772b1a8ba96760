//! The experiment file's schema: one struct per section, with the defaults
//! of every key. Unknown keys are errors; the settings of an algorithm are
//! defined beside it in `rl/` and only composed here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lmmhost_plugin_host::{Limits, OnError};
use serde::Deserialize;

use crate::rl::advantage::AdvantageEstimator;
use crate::rl::dynamic_sampling::DynamicSampling;
use crate::rl::kl::Kl;
use crate::rl::pad::PadConfig;
use crate::rl::policy_loss::{ClipConfig, LossAggregation, PolicyLoss};
use crate::rl::schedules::{EntropyBonus, LrDecay};
use crate::train::lora::LoraSection;

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
    /// Data-parallel runs (`lmmhost run --nproc N`, torchrun, Slurm).
    #[serde(default)]
    pub distributed: DistributedSection,
    /// The file as parsed TOML: stage overrides are applied to it and the
    /// sections re-read, so every stage setting gets the file's checks.
    #[serde(skip)]
    pub raw: toml::Table,
}

/// Settings of SFT stages (the loss covers assistant tokens only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sft {
    /// Conversations per optimizer step (default: rollout.prompts_per_step).
    pub batch_size: Option<usize>,
    /// Conversations longer than this are skipped or stop the run (`long_samples`).
    pub max_tokens: usize,
    pub long_samples: LongInputs,
}

impl Default for Sft {
    fn default() -> Self {
        Sft {
            batch_size: None,
            max_tokens: 2048,
            long_samples: LongInputs::Skip,
        }
    }
}

/// What happens to an input over its token limit (`rollout.long_prompts`,
/// `sft.long_samples`). Either way the first few are reported with their
/// sample id and token count, and every one is counted in the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LongInputs {
    /// Leave it out of the step and go on.
    #[default]
    Skip,
    /// Stop the run with the sample's id, its token count and the limit.
    Error,
}

/// Settings of a data-parallel run; a process not launched as a rank
/// ignores them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedSection {
    /// How long joining and each collective may wait for the other ranks
    /// before this rank stops with an error (a rank that died or hangs).
    pub timeout_secs: f64,
    /// Build the process group even when the run has one rank, so that the
    /// backend (NCCL on a GPU) and every collective of the step run: a
    /// check of the distributed path on a machine with one device.
    pub group_of_one: bool,
    /// ZeRO: 0 every rank holds the whole optimizer state; 1 each rank holds
    /// the AdamW moments and f32 master weights of its shard of the trained
    /// parameters; 2 also holds only its shard of the gradients' sum (each
    /// micro-batch's gradients reduce-scattered instead of the sum
    /// all-reduced). A world of one ignores it.
    pub zero_stage: u8,
    /// Size of the gradient all-reduce's buckets in MiB (DDP's
    /// `bucket_cap_mb`): fewer messages, or an earlier start in the backward.
    pub bucket_mb: f64,
    /// Start each bucket's all-reduce during the last micro-batch's backward
    /// pass, as soon as its gradients are final (ZeRO stages 0 and 1,
    /// without activation checkpointing); false reduces after the backward.
    pub overlap_backward: bool,
}

impl Default for DistributedSection {
    fn default() -> Self {
        // torch.distributed's default for Gloo.
        DistributedSection {
            timeout_secs: 1800.0,
            group_of_one: false,
            zero_stage: 0,
            bucket_mb: 25.0,
            overlap_backward: true,
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
    /// The GRPO update keeps only each decoder layer's inputs from its
    /// forward and recomputes one layer at a time in the backward: less
    /// activation memory for about one more forward of compute.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Load weights holding NaN or infinities (refused by default: a
    /// diverged or corrupt checkpoint would train on and save garbage).
    #[serde(default)]
    pub allow_non_finite_weights: bool,
    /// Images with more pixels are refused from their header, before
    /// decoding (default: PIL's decompression-bomb limit, 89,478,485).
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
    /// Image resize bounds in pixels, replacing the checkpoint's
    /// `preprocessor_config.json` values in the processor every part of the
    /// run uses and in the processor files saved with each checkpoint.
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// LoRA adapters: only they train (see docs/lora.md).
    pub lora: Option<LoraSection>,
}

impl ModelSection {
    /// The model at `path` with every other key at its default.
    pub fn new(path: impl Into<PathBuf>) -> ModelSection {
        ModelSection {
            path: path.into(),
            init: ModelInit::default(),
            device: default_device(),
            dtype: default_dtype(),
            threads: None,
            workers: one_worker(),
            activation_checkpointing: false,
            allow_non_finite_weights: false,
            max_image_pixels: default_max_image_pixels(),
            min_pixels: None,
            max_pixels: None,
            lora: None,
        }
    }
}

fn one_worker() -> usize {
    1
}

fn default_max_image_pixels() -> u64 {
    lmmhost_model::processor::image::DEFAULT_MAX_DECODE_PIXELS
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
    /// The sandbox's limits for this plugin (`[plugins.NAME.limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// What a reward plugin's failure on one item costs the batch.
    #[serde(default)]
    pub on_error: OnError,
    /// Reload the component at the next step boundary when the file changes.
    #[serde(default)]
    pub watch: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardRef {
    pub plugin: String,
    #[serde(default = "one")]
    pub weight: f64,
    /// The datasets whose samples this reward scores (default: all).
    pub datasets: Option<Vec<String>>,
}

impl RewardRef {
    pub fn scores(&self, dataset: &str) -> bool {
        self.datasets
            .as_ref()
            .is_none_or(|d| d.iter().any(|n| n == dataset))
    }
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
    /// Folders of images granted read-only apart from the data files: the
    /// loader is not opened on them, the host names them in its config's
    /// `image_roots` (for layouts that keep images in another folder).
    #[serde(default)]
    pub images: Vec<PathBuf>,
    /// Loader settings for this dataset, merged over the plugin's `config`.
    #[serde(default)]
    pub config: toml::Table,
    /// What a sample whose text holds one of the model's special tokens
    /// (`<|im_start|>`, `<|image_pad|>`, ...) does.
    #[serde(default)]
    pub special_tokens: SpecialTokens,
}

/// `datasets.NAME.special_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpecialTokens {
    /// The sample is refused with its id and the token found: dataset text
    /// must not forge chat turns or image placeholders.
    #[default]
    Refuse,
    /// Tokenised as written, as transformers' `apply_chat_template` does:
    /// each becomes its control token.
    Tokenize,
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
    /// Prompts over `max_prompt_tokens`: skipped (reported, counted) or an error.
    pub long_prompts: LongInputs,
    pub max_response_tokens: usize,
    /// EOS is blocked until this many tokens were generated (benchmarks fix lengths with it).
    pub min_new_tokens: usize,
    pub prompts_per_step: usize,
    /// Most keys/values the rollout holds at once, in tokens (each prompt
    /// once for its group, each row's own response tokens); rows wait for a
    /// slot beyond it. Unset: every row at once.
    pub kv_cache_budget: Option<usize>,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            group_size: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_prompt_tokens: 1024,
            long_prompts: LongInputs::Skip,
            max_response_tokens: 512,
            min_new_tokens: 0,
            prompts_per_step: 16,
            kv_cache_budget: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optim {
    pub lr: f64,
    pub lr_decay: LrDecay,
    /// Optimizer updates of linear warmup, counted from each stage's start ...
    pub warmup_steps: u64,
    /// ... or a fraction of the stage's updates (`ceil(ratio * updates)`).
    pub warmup_ratio: Option<f64>,
    /// Floor of the decay as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Optimizer updates the decay spans (default: the stage's, so that it
    /// ends with the stage).
    pub decay_steps: Option<u64>,
    /// The stage's length in steps: schedule-staged sets it for every stage
    /// (warmup ratios, decays and PAD's temperature are laid over it).
    pub stage_steps: Option<u64>,
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
            warmup_ratio: None,
            min_lr_ratio: 0.0,
            decay_steps: None,
            stage_steps: None,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
            grad_clip: 1.0,
            micro_batch_size: 8,
            updates_per_batch: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpo {
    pub advantage: AdvantageEstimator,
    /// Clamp of each completion's advantage before the KL term and whitening
    /// (OpenRLHF's `reward_clip_range`, [-10, 10] there).
    pub advantage_clip: Option<[f64; 2]>,
    /// OpenRLHF's whitening: advantages standardised over the batch's tokens
    /// (after the KL term when it is in the reward).
    pub whiten_advantages: bool,
    pub policy_loss: PolicyLoss,
    pub clip_low: f64,
    pub clip_high: f64,
    /// Dual clip constant for negative advantages (e.g. 3.0); unset disables it.
    pub dual_clip: Option<f64>,
    pub loss_aggregation: LossAggregation,
    /// The constant of `seq-sum-constant` (default: rollout.max_response_tokens).
    pub loss_constant_length: Option<usize>,
    /// The old-policy and reference log-prob passes run in chunks of rows
    /// holding at most this many padded tokens (prompt + response) each, so
    /// their peak memory follows this budget, not the rollout batch (a row
    /// longer than the budget runs alone). Unset: chunks of
    /// `optim.micro_batch_size` rows.
    pub logprob_chunk_tokens: Option<usize>,
    pub kl: Kl,
    pub entropy: EntropyBonus,
    pub pad: PadConfig,
    pub dynamic_sampling: DynamicSampling,
    pub freeze_vision: bool,
    pub freeze_language: bool,
    /// Parameters whose names start with one of these are frozen too
    /// (checkpoint names, e.g. "visual.blocks." to train only the merger).
    pub freeze_prefixes: Vec<String>,
}

impl Grpo {
    /// The surrogate objective's clipping.
    pub fn clip(&self) -> ClipConfig {
        ClipConfig {
            low: self.clip_low,
            high: self.clip_high,
            dual: self.dual_clip,
        }
    }
}

impl Default for Grpo {
    fn default() -> Self {
        Grpo {
            advantage: AdvantageEstimator::GroupNorm,
            advantage_clip: None,
            whiten_advantages: false,
            policy_loss: PolicyLoss::PpoClip,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            loss_aggregation: LossAggregation::TokenMean,
            loss_constant_length: None,
            logprob_chunk_tokens: None,
            kl: Kl::default(),
            entropy: EntropyBonus::default(),
            pad: PadConfig::default(),
            dynamic_sampling: DynamicSampling::default(),
            freeze_vision: false,
            freeze_language: false,
            freeze_prefixes: Vec::new(),
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

/// Why a document did not parse: the dotted key path it is about (empty
/// when the document itself is malformed), what is wrong, and the whole
/// message with the parser's line and column in the parsed text.
#[derive(Debug)]
pub(super) struct ParseError {
    pub key: String,
    pub message: String,
    pub located: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.located)
    }
}

/// Parses the TOML text; the error names the dotted key path (`optim.lr`), the
/// line and what was expected.
pub(super) fn parse(text: &str) -> std::result::Result<Experiment, ParseError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ParseError {
        key: String::new(),
        message: e.message().to_string(),
        located: e.to_string(),
    })?;
    let mut exp: Experiment = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().message().to_string();
        ParseError {
            located: path_error(e),
            key: if key == "." { String::new() } else { key },
            message,
        }
    })?;
    exp.raw = text.parse::<toml::Table>().map_err(|e| ParseError {
        key: String::new(),
        message: e.message().to_string(),
        located: e.to_string(),
    })?;
    Ok(exp)
}

/// A deserialization error prefixed with the dotted key it is about.
pub(super) fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> String {
    let key = e.path().to_string();
    let inner = e.into_inner().to_string();
    if key.is_empty() || key == "." {
        inner
    } else {
        format!("key `{key}`: {inner}")
    }
}
