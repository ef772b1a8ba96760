//! `model.lora`: training LoRA adapters instead of the model. The base
//! weights stay frozen (no gradients, no optimizer state, no f32 masters);
//! checkpoints and the final model are PEFT adapter directories, and
//! `merge_on_save` also writes the final model merged into a plain Hugging
//! Face checkpoint (`final-model-merged/`, for vLLM).

use lmmhost_model::lora::{LoraConfig, LANGUAGE_TARGETS};
use serde::Deserialize;

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
