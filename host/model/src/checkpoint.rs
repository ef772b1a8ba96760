//! Hugging Face checkpoint directories in and out: `config.json`, the weight
//! files (see [`crate::weights`]) and the tokenizer and processor files.
//!
//! In: both key layouts are read: `model.*` + `visual.*` (as published) and
//! `model.language_model.*` + `model.visual.*` (as transformers 5 modules name
//! them).
//!
//! Out: a directory `from_pretrained` loads unchanged: config.json as read,
//! the input's key layout (see [`Source::layout`]) and tensor dtypes, safetensors with
//! `{"format": "pt"}` metadata, sharded past a size limit, tokenizer and
//! processor files written along. Those files are read into memory at load,
//! so every save is complete even after the source directory is gone (a
//! resumed run whose checkpoint was pruned since).

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

use crate::config::ModelConfig;
use crate::lora::{AdapterSwitch, LoraConfig};
use crate::model::Model;
pub use crate::weights::KeyLayout;
use crate::weights::{write_shards, Params, Weights};

/// Files copied next to the weights on save when the source has them.
pub const COMPANION_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
];

/// Where a loaded model came from: what save needs to write it back alike.
pub struct Source {
    /// None for a randomly initialised model.
    pub dir: Option<PathBuf>,
    /// `config.json` and the [`COMPANION_FILES`] the source had, by file
    /// name, as read when the model was loaded.
    pub files: Vec<(String, Vec<u8>)>,
    /// The key layout save writes: the one read, except where transformers
    /// reads the architecture in one layout only (Qwen3-VL: its module layout).
    pub layout: KeyLayout,
    pub source_kinds: HashMap<String, Kind>,
    pub unused: Vec<String>,
}

/// A network with its config and where it came from.
pub struct LoadedModel {
    pub model: Model,
    /// Turns the model's LoRA adapters (if any) off and on.
    pub adapters: AdapterSwitch,
    pub config: ModelConfig,
    pub source: Source,
}

/// A randomly initialised model for `config` (seeded through `tch::manual_seed`).
/// `files_dir`, if given, is where save copies config.json and the tokenizer
/// and processor files from (e.g. configs/models/tiny-qwen2.5-vl).
pub fn init_random(
    config: ModelConfig,
    files_dir: Option<&Path>,
    device: Device,
    kind: Kind,
) -> Result<LoadedModel> {
    init_random_with(config, files_dir, device, kind, &LoadOptions::default())
}

/// [`init_random`] with the adapters `opts.lora` asks for (left at zero).
pub fn init_random_with(
    config: ModelConfig,
    files_dir: Option<&Path>,
    device: Device,
    kind: Kind,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    let mut w = Weights::random(device, kind);
    w.lora = opts.lora.clone();
    let model = Model::build(&config, &mut w)?;
    let source = Source {
        dir: files_dir.map(Path::to_path_buf),
        files: match files_dir {
            Some(d) => read_source_files(d)?,
            None => Vec::new(),
        },
        layout: config.architecture.save_layout(KeyLayout::Published),
        source_kinds: HashMap::new(),
        unused: Vec::new(),
    };
    Ok(LoadedModel {
        adapters: w.adapter_switch.clone(),
        model,
        config,
        source,
    })
}

/// [`init_random`] seeded with `seed`, reproducibly: libtorch's generator is
/// process-global, so seeding and drawing the weights happen under one lock,
/// and concurrent initialisations (threads, parallel tests) cannot interleave
/// their draws.
pub fn init_random_seeded(
    config: ModelConfig,
    files_dir: Option<&Path>,
    device: Device,
    kind: Kind,
    seed: i64,
) -> Result<LoadedModel> {
    init_random_seeded_with(
        config,
        files_dir,
        device,
        kind,
        seed,
        &LoadOptions::default(),
    )
}

/// [`init_random_seeded`] with options (the adapters of `opts.lora` are
/// zeros and draw nothing, so the base weights are those of a seed without them).
pub fn init_random_seeded_with(
    config: ModelConfig,
    files_dir: Option<&Path>,
    device: Device,
    kind: Kind,
    seed: i64,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    seeded(seed, || {
        init_random_with(config, files_dir, device, kind, opts)
    })
}

/// Runs `f` with libtorch's (process-wide) generator seeded with `seed`,
/// holding the lock every seeded draw takes: another thread reseeding the
/// generator or drawing from it mid-way would change what `f` draws. Code
/// (and tests) that draws from the global generator while others may be
/// seeding it goes through here.
pub fn seeded<R>(seed: i64, f: impl FnOnce() -> R) -> R {
    static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = GLOBAL_GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    f()
}

/// What loading accepts beyond a sound checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Take weights holding NaN or infinities instead of refusing them.
    pub allow_non_finite: bool,
    /// LoRA adapters to add to the linear layers (A and B zero; see
    /// [`crate::lora::init_adapters`] and [`crate::peft_adapter::load_adapter`]).
    pub lora: Option<LoraConfig>,
}

/// Loads the checkpoint directory `dir` on `device` in `kind`; weights that
/// are not finite or not floating-point are refused, naming the tensor.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<LoadedModel> {
    load_with(dir, device, kind, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(dir: &Path, device: Device, kind: Kind, opts: LoadOptions) -> Result<LoadedModel> {
    let config = ModelConfig::from_dir(dir)?;
    let mut w = Weights::load(dir, device, kind)?;
    w.allow_non_finite = opts.allow_non_finite;
    w.lora = opts.lora;
    let model = Model::build(&config, &mut w)?;
    let unused = w.unused();
    let source = Source {
        dir: Some(dir.to_path_buf()),
        files: read_source_files(dir)?,
        layout: config.architecture.save_layout(w.layout()),
        source_kinds: w.source_kinds().clone(),
        unused,
    };
    Ok(LoadedModel {
        adapters: w.adapter_switch.clone(),
        model,
        config,
        source,
    })
}

/// `config.json` and the companion files present in `dir`.
fn read_source_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for f in std::iter::once(&"config.json").chain(COMPANION_FILES) {
        let p = dir.join(f);
        if p.is_file() {
            let bytes =
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            out.push((f.to_string(), bytes));
        }
    }
    Ok(out)
}

/// How to write a checkpoint.
pub struct SaveOptions {
    /// Largest shard in bytes before splitting (transformers' default is 5 GB).
    pub max_shard_bytes: u64,
    /// Dtype of floating tensors; None: the dtype each had in the source files.
    pub dtype: Option<Kind>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            max_shard_bytes: 5_000_000_000,
            dtype: None,
        }
    }
}

/// Writes `loaded` (possibly trained) into `out_dir` as a Hugging Face
/// checkpoint: the base weights as they are, LoRA adapters left out (see
/// [`crate::lora`] for saving those).
pub fn save(loaded: &LoadedModel, out_dir: &Path, opts: &SaveOptions) -> Result<()> {
    let params = loaded
        .model
        .named_parameters()
        .into_iter()
        .filter(|(n, _)| !crate::lora::is_adapter(n))
        .collect();
    save_params(loaded, params, out_dir, opts)
}

/// [`save`] with `params` (canonical name, tensor) as the weights.
pub fn save_params(
    loaded: &LoadedModel,
    params: Params,
    out_dir: &Path,
    opts: &SaveOptions,
) -> Result<()> {
    let src = &loaded.source;
    if out_dir.exists() {
        let a = std::fs::canonicalize(out_dir)
            .with_context(|| format!("cannot resolve {}", out_dir.display()))?;
        if let Some(Ok(b)) = src.dir.as_ref().map(std::fs::canonicalize) {
            if a == b {
                bail!("refusing to overwrite the source checkpoint {} in place; save to a new directory", out_dir.display());
            }
        }
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut tensors = Vec::new();
    for (name, t) in params {
        let kind = if t.is_floating_point() {
            opts.dtype
                .or_else(|| src.source_kinds.get(&name).copied())
                .unwrap_or(t.kind())
        } else {
            t.kind()
        };
        tensors.push((src.layout.file_key(&name), t, kind));
    }
    write_shards(tensors, out_dir, opts.max_shard_bytes)?;
    // config.json exactly as read, else as parsed (a config built in code).
    if !src.files.iter().any(|(name, _)| name == "config.json") {
        let cfg_dst = out_dir.join("config.json");
        std::fs::write(&cfg_dst, serde_json::to_string_pretty(&loaded.config.raw)?)
            .with_context(|| format!("cannot write {}", cfg_dst.display()))?;
    }
    for (name, bytes) in &src.files {
        let d = out_dir.join(name);
        std::fs::write(&d, bytes).with_context(|| format!("cannot write {}", d.display()))?;
    }
    Ok(())
}
