//! `model.lora`: training LoRA adapters instead of the model. The base
//! weights stay frozen (no gradients, no optimizer state, no f32 masters);
//! checkpoints and the final model are PEFT adapter directories, and
//! `merge_on_save` also writes the final model merged into a plain Hugging
//! Face checkpoint (`final-model-merged/`, for vLLM).

use lmmhost_model::config::{Architecture, ModelConfig};
use lmmhost_model::lora::{LoraConfig, LANGUAGE_TARGETS};
use serde::Deserialize;

use super::memory_plan::ParamCount;
use crate::rl::kl::{Kl, KlReference};

/// `model.lora = { rank, alpha, dropout, targets, vision, rslora, merge_on_save }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Language-model projections that get adapters.
    pub targets: Vec<String>,
    /// Also the vision tower's blocks (attention and MLP linear layers).
    pub vision: bool,
    /// rsLoRA scaling, `alpha / sqrt(rank)`.
    pub rslora: bool,
    /// Also write the final model with the adapters merged in (`final-model-merged/`).
    pub merge_on_save: bool,
}

impl Default for LoraSection {
    /// PEFT's defaults for rank, alpha and dropout; every projection of the
    /// decoder layers as targets (what PEFT's "all-linear" picks in a
    /// Qwen2-family LLM, lm_head aside).
    fn default() -> Self {
        LoraSection {
            rank: 8,
            alpha: 8.0,
            dropout: 0.0,
            targets: LANGUAGE_TARGETS.iter().map(|s| s.to_string()).collect(),
            vision: false,
            rslora: false,
            merge_on_save: false,
        }
    }
}

impl LoraSection {
    pub fn config(&self) -> LoraConfig {
        LoraConfig {
            rank: self.rank as i64,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.targets.clone(),
            vision: self.vision,
            rslora: self.rslora,
        }
    }
}

/// What `model.lora` cannot be combined with, one line per problem, each
/// naming both keys: pure bf16/f16 (adapter updates would round away like
/// any other) and freezing that leaves no adapter to train or names one
/// that does not exist.
pub fn conflicts(
    lora: &LoraSection,
    dtype: &str,
    freeze_vision: bool,
    freeze_language: bool,
    where_: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if dtype.trim().ends_with("-pure") {
        out.push(format!(
            "model.lora with model.dtype = {dtype:?}: LoRA trains in mixed precision (\"bf16\": f32 master weights for the adapters) or f32; pure bf16/f16 would round the adapters' updates away"
        ));
    }
    if freeze_language && !lora.vision {
        out.push(format!(
            "{where_}freeze_language with model.lora and model.lora.vision = false: every adapter would be frozen, nothing trains"
        ));
    }
    if freeze_vision && lora.vision {
        out.push(format!(
            "{where_}freeze_vision with model.lora.vision = true: the vision adapters would never train; set model.lora.vision = false instead"
        ));
    }
    out
}

/// Whether the KL reference is the policy with its adapters off (no copy):
/// under LoRA, with the initial model as the reference and no device or
/// dtype of its own asked for.
pub fn reference_is_policy(lora: bool, kl: &Kl) -> bool {
    lora && matches!(kl.reference, KlReference::Initial)
        && kl.reference_device.is_none()
        && kl.reference_dtype.is_none()
}

/// The adapters' parameter count for a model of config `c`, by tower: the
/// memory planner counts these as what trains (with their gradients,
/// moments and f32 masters) instead of the model's weights.
pub fn adapter_params(c: &ModelConfig, l: &LoraSection) -> ParamCount {
    let r = l.rank as i64;
    let t = &c.text;
    let (h, i) = (t.hidden_size, t.intermediate_size);
    let (q, kv) = (
        t.num_attention_heads * t.head_dim,
        t.num_key_value_heads * t.head_dim,
    );
    // (in, out) of each projection a target names.
    let per_layer: i64 = l
        .targets
        .iter()
        .map(|name| {
            let (inp, out) = match name.as_str() {
                "q_proj" => (h, q),
                "k_proj" | "v_proj" => (h, kv),
                "o_proj" => (q, h),
                "gate_proj" | "up_proj" => (h, i),
                "down_proj" => (i, h),
                _ => (0, 0),
            };
            r * (inp + out)
        })
        .sum();
    let vision = match (&c.vision, l.vision) {
        (Some(v), true) => {
            let (vh, vi) = (v.hidden_size, v.intermediate_size);
            // Attention qkv and proj, then the MLP: gated (three linear
            // layers) in Qwen2.5-VL, two in Qwen3-VL.
            let attention = r * (vh + 3 * vh) + r * (vh + vh);
            let mlp = match c.architecture {
                Architecture::Qwen2_5Vl => 2 * r * (vh + vi) + r * (vi + vh),
                _ => 2 * r * (vh + vi),
            };
            (v.depth * (attention + mlp)) as u64
        }
        _ => 0,
    };
    ParamCount {
        language: (t.num_hidden_layers * per_layer) as u64,
        vision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmmhost_model::checkpoint::{self, LoadOptions};
    use lmmhost_model::lora::is_adapter;
    use std::path::Path;

    /// The planner's count equals the adapters a model really gets.
    #[test]
    fn adapter_count_matches_the_built_model() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models");
        for (name, vision, targets) in [
            (
                "tiny-qwen2.5-vl",
                true,
                vec!["q_proj", "v_proj", "down_proj"],
            ),
            ("tiny-qwen2.5-vl", false, LANGUAGE_TARGETS.to_vec()),
            ("tiny-qwen3-vl", true, LANGUAGE_TARGETS.to_vec()),
        ] {
            let section = LoraSection {
                rank: 3,
                vision,
                targets: targets.iter().map(|s| s.to_string()).collect(),
                ..LoraSection::default()
            };
            let config = ModelConfig::from_dir(&models.join(name)).unwrap();
            let opts = LoadOptions {
                lora: Some(section.config()),
                ..Default::default()
            };
            let m = checkpoint::init_random_with(
                config.clone(),
                None,
                tch::Device::Cpu,
                tch::Kind::Float,
                &opts,
            )
            .unwrap();
            let (mut lang, mut vis) = (0, 0);
            for (n, t) in m.model.named_parameters() {
                if is_adapter(&n) {
                    let c = t.numel() as u64;
                    if n.starts_with("visual.") {
                        vis += c;
                    } else {
                        lang += c;
                    }
                }
            }
            let want = adapter_params(&config, &section);
            assert_eq!((want.language, want.vision), (lang, vis), "{name} {vision}");
            assert!(lang > 0 && (vis > 0) == vision);
        }
    }
}
