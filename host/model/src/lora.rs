//! LoRA adapters as PEFT defines them: a frozen linear layer `W` gains
//! `y += scaling * B(A(dropout(x)))` with `A` `[rank, in]` (Kaiming-uniform,
//! as `nn.Linear` initialises) and `B` `[out, rank]` (zeros, so a fresh
//! adapter leaves the model as it was), `scaling = alpha / rank` (or
//! `alpha / sqrt(rank)` with rsLoRA).
//!
//! The adapters live inside the linear layers they adapt ([`crate::layers::Linear`])
//! as ordinary tensors, named `{layer}.lora_A.weight` / `{layer}.lora_B.weight`
//! among the model's parameters, so anything that walks a layer's parameters
//! (optimizer, a recomputing backward) finds them. On disk they are a PEFT
//! adapter directory (`adapter_config.json`, `adapter_model.safetensors`
//! under PEFT's key names), or merged into the base weights as a plain
//! Hugging Face checkpoint.

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Kind, Tensor};

use crate::checkpoint::{self, LoadedModel, SaveOptions};
use crate::weights::{KeyLayout, Params};

/// The language-model projections an adapter can target (names as in
/// `model.layers.N.self_attn.*` and `model.layers.N.mlp.*`).
pub const LANGUAGE_TARGETS: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Which layers get adapters and how they are scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: i64,
    pub alpha: f64,
    /// Dropout on the adapter's input, in training forwards only.
    pub dropout: f64,
    /// Language-model projections (see [`LANGUAGE_TARGETS`]).
    pub targets: Vec<String>,
    /// Also every linear layer of the vision tower's blocks (attention
    /// `qkv`, `proj` and the MLP); the patch embedding and mergers stay frozen.
    pub vision: bool,
    /// rsLoRA: `scaling = alpha / sqrt(rank)`.
    pub rslora: bool,
}

impl LoraConfig {
    /// Problems with the settings, each naming its key under `prefix` (e.g. `model.lora`).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.rank < 1 {
            out.push(format!("{prefix}.rank = {}: must be >= 1", self.rank));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            out.push(format!("{prefix}.alpha = {}: must be > 0", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            out.push(format!(
                "{prefix}.dropout = {}: must be in [0, 1)",
                self.dropout
            ));
        }
        if self.targets.is_empty() && !self.vision {
            out.push(format!(
                "{prefix}.targets is empty and {prefix}.vision = false: no layer would get an adapter"
            ));
        }
        for t in &self.targets {
            if !LANGUAGE_TARGETS.contains(&t.as_str()) {
                out.push(format!(
                    "{prefix}.targets: unknown target {t:?}; expected some of {}",
                    LANGUAGE_TARGETS.join(", ")
                ));
            }
        }
        out
    }

    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Whether the linear layer with canonical name `layer` gets an adapter.
    pub fn applies_to(&self, layer: &str) -> bool {
        if layer.starts_with("visual.") {
            return self.vision && layer.starts_with("visual.blocks.");
        }
        layer.starts_with("model.layers.")
            && layer
                .rsplit('.')
                .next()
                .is_some_and(|last| self.targets.iter().any(|t| t == last))
    }
}

/// Turns every adapter of one model off and on at once: the model with its
/// adapters off is the base model, which serves as the KL reference
/// without a second copy of the weights.
#[derive(Debug, Clone)]
pub struct AdapterSwitch(Arc<AtomicBool>);

impl Default for AdapterSwitch {
    fn default() -> Self {
        AdapterSwitch(Arc::new(AtomicBool::new(true)))
    }
}

impl AdapterSwitch {
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Runs `f` with the adapters off (the base model), then turns them
    /// back on. Nothing else may run the model meanwhile.
    pub fn without_adapters<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.store(false, Ordering::Relaxed);
        let out = f();
        self.0.store(true, Ordering::Relaxed);
        out
    }
}

/// One layer's adapter.
pub struct LoraAdapter {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`.
    pub b: Tensor,
    scaling: f64,
    dropout: f64,
    switch: AdapterSwitch,
}

impl LoraAdapter {
    /// A and B both zero: [`init_adapters`] draws A once the whole model is
    /// built, so that the base weights a seed draws do not depend on LoRA.
    pub fn new(
        c: &LoraConfig,
        out_dim: i64,
        in_dim: i64,
        like: &Tensor,
        switch: &AdapterSwitch,
    ) -> Self {
        let opts = (like.kind(), like.device());
        LoraAdapter {
            a: Tensor::zeros([c.rank, in_dim], opts),
            b: Tensor::zeros([out_dim, c.rank], opts),
            scaling: c.scaling(),
            dropout: c.dropout,
            switch: switch.clone(),
        }
    }

    /// Whether the adapter adds its output (see [`AdapterSwitch`]).
    pub fn is_on(&self) -> bool {
        self.switch.is_on()
    }

    /// `scaling * B(A(dropout(x)))`. Dropout acts only in a forward that
    /// records gradients for the adapter (the update), never in rollouts or
    /// log-prob passes.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        // An op on A requires grad only when autograd records (grad mode on).
        let training = self.dropout > 0.0 && (self.a.get(0).get(0) * 1.0).requires_grad();
        let x = if training {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.linear(&self.a, None::<&Tensor>)
            .linear(&self.b, None::<&Tensor>)
            * self.scaling
    }

    pub fn params(&self, layer: &str, out: &mut Params) {
        out.push((format!("{layer}.lora_A.weight"), self.a.shallow_clone()));
        out.push((format!("{layer}.lora_B.weight"), self.b.shallow_clone()));
    }
}

/// Whether a parameter name is an adapter's.
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// Draws every `lora_A` from PEFT's default, `kaiming_uniform_(a = sqrt(5))`,
/// i.e. U(-1/sqrt(in), 1/sqrt(in)), from its own generator seeded with `seed`
/// (libtorch's global generator stays as the base model's draw left it).
pub fn init_adapters(params: &Params, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let _guard = tch::no_grad_guard();
    for (name, t) in params {
        if !name.ends_with(".lora_A.weight") {
            continue;
        }
        let bound = 1.0 / (t.size()[1] as f64).sqrt();
        let values: Vec<f32> = (0..t.numel())
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let drawn = Tensor::from_slice(&values)
            .reshape(t.size())
            .to_kind(t.kind())
            .to_device(t.device());
        t.shallow_clone().copy_(&drawn);
    }
}

/// The module name transformers gives a canonical layer name: text models
/// keep the published layout, the VL models nest the language model.
fn module_name(loaded: &LoadedModel, canonical: &str) -> String {
    let layout = if loaded.config.architecture.is_multimodal() {
        KeyLayout::Nested
    } else {
        KeyLayout::Published
    };
    layout.file_key(canonical)
}

/// PEFT's key for an adapter parameter (`base_model.model.<module>.lora_A.weight`).
fn peft_key(loaded: &LoadedModel, param: &str) -> String {
    let (layer, tail) = param
        .rsplit_once(".lora_")
        .map_or((param, ""), |(l, t)| (l, t));
    format!(
        "base_model.model.{}.lora_{tail}",
        module_name(loaded, layer)
    )
}

/// `target_modules` for adapter_config.json: a regular expression PEFT
/// full-matches against module names, built from the adapted layers with
/// their layer numbers generalised, so that it names exactly those layers
/// (a plain list of suffixes would also catch the vision tower's
/// `gate_proj` or a merger's `linear_fc1`).
fn target_regex(loaded: &LoadedModel, layers: &BTreeSet<String>) -> String {
    let mut patterns = BTreeSet::new();
    for layer in layers {
        let parts: Vec<String> = module_name(loaded, layer)
            .split('.')
            .map(|p| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    r"\d+".to_string()
                } else {
                    p.to_string()
                }
            })
            .collect();
        patterns.insert(parts.join(r"\."));
    }
    let all: Vec<String> = patterns.into_iter().collect();
    format!("(?:{})", all.join("|"))
}

fn adapter_params(loaded: &LoadedModel) -> Params {
    loaded
        .model
        .named_parameters()
        .into_iter()
        .filter(|(n, _)| is_adapter(n))
        .collect()
}

/// Writes the adapters of `loaded` into `dir` as a PEFT adapter directory
/// (plus the tokenizer and processor files, as PEFT's own saves carry them
/// when asked), loadable with `PeftModel.from_pretrained(base, dir)`.
/// `base` is what `base_model_name_or_path` names.
pub fn save_adapter(loaded: &LoadedModel, c: &LoraConfig, base: &str, dir: &Path) -> Result<()> {
    let params = adapter_params(loaded);
    ensure!(!params.is_empty(), "the model has no LoRA adapters to save");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let layers: BTreeSet<String> = params
        .iter()
        .filter_map(|(n, _)| n.strip_suffix(".lora_A.weight").map(str::to_string))
        .collect();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": c.rank,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "use_rslora": c.rslora,
        "target_modules": target_regex(loaded, &layers),
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    let path = dir.join(ADAPTER_CONFIG);
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let named: Vec<(String, Tensor)> = params
        .iter()
        .map(|(n, t)| (peft_key(loaded, n), t.detach().to_device(tch::Device::Cpu)))
        .collect();
    let path = dir.join(ADAPTER_WEIGHTS);
    Tensor::write_safetensors(&named, &path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    for (name, bytes) in &loaded.source.files {
        if name != "config.json" {
            let d = dir.join(name);
            std::fs::write(&d, bytes).with_context(|| format!("cannot write {}", d.display()))?;
        }
    }
    Ok(())
}

/// Reads the adapters saved in `dir` (by [`save_adapter`]) into `loaded`,
/// whose adapters must have the same layers and rank.
pub fn load_adapter(loaded: &LoadedModel, c: &LoraConfig, dir: &Path) -> Result<()> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let saved: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let (r, alpha) = (saved["r"].as_i64(), saved["lora_alpha"].as_f64());
    if r != Some(c.rank) || alpha != Some(c.alpha) {
        bail!(
            "{} has r = {r:?}, lora_alpha = {alpha:?}; model.lora has rank = {}, alpha = {}",
            path.display(),
            c.rank,
            c.alpha
        );
    }
    let path = dir.join(ADAPTER_WEIGHTS);
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .into_iter()
        .collect();
    let params = adapter_params(loaded);
    ensure!(
        tensors.len() == params.len(),
        "{} holds {} adapter tensors, the model with model.lora has {} (different targets or vision setting?)",
        path.display(),
        tensors.len(),
        params.len()
    );
    let _guard = tch::no_grad_guard();
    for (name, t) in &params {
        let key = peft_key(loaded, name);
        let src = tensors
            .get(&key)
            .with_context(|| format!("{}: no tensor {key}", path.display()))?;
        ensure!(
            src.size() == t.size(),
            "{}: {key} has shape {:?}, the adapter {:?}",
            path.display(),
            src.size(),
            t.size()
        );
        t.shallow_clone()
            .copy_(&src.to_kind(t.kind()).to_device(t.device()));
    }
    Ok(())
}

/// The base parameters with each adapter folded in (`W + scaling * B A`,
/// computed in f32), adapters left out: what a plain checkpoint holds.
pub fn merged_params(params: &Params, scaling: f64) -> Params {
    let by_name: BTreeMap<&str, &Tensor> = params.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let _guard = tch::no_grad_guard();
    params
        .iter()
        .filter(|(n, _)| !is_adapter(n))
        .map(|(name, w)| {
            let layer = name.strip_suffix(".weight").unwrap_or(name);
            let a = by_name.get(format!("{layer}.lora_A.weight").as_str());
            let b = by_name.get(format!("{layer}.lora_B.weight").as_str());
            let merged = match (a, b) {
                (Some(a), Some(b)) => {
                    let delta = b.to_kind(Kind::Float).matmul(&a.to_kind(Kind::Float)) * scaling;
                    (w.to_kind(Kind::Float) + delta).to_kind(w.kind())
                }
                _ => w.shallow_clone(),
            };
            (name.clone(), merged)
        })
        .collect()
}

/// Writes `loaded` with its adapters merged into the base weights as a
/// plain Hugging Face checkpoint directory (for vLLM or transformers alone),
/// in the dtype `opts` names or else the base checkpoint's.
pub fn save_merged(
    loaded: &LoadedModel,
    c: &LoraConfig,
    dir: &Path,
    opts: &SaveOptions,
) -> Result<()> {
    let params = merged_params(&loaded.model.named_parameters(), c.scaling());
    checkpoint::save_params(loaded, params, dir, opts)
}
