//! PEFT adapter directories: a model's LoRA adapters saved as PEFT saves
//! them (`adapter_config.json`, `adapter_model.safetensors` under PEFT's key
//! names, which `PeftModel.from_pretrained` loads onto the base model),
//! loaded back for resume, or merged into the base weights as a plain
//! Hugging Face checkpoint (for vLLM or transformers alone).

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Kind, Tensor};

use crate::checkpoint::{self, LoadedModel, SaveOptions};
use crate::lora::{is_adapter, LoraConfig};
use crate::weights::{KeyLayout, Params};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

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
