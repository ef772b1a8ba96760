//! Parameter counts from a model's config.json alone (no weights): the
//! model's, by tower, and the LoRA adapters' that `model.lora` would add.
//! `lmmhost plan` sizes weights, gradients and optimizer state from them.

use anyhow::{bail, Result};
use lmmhost_model::config::{Architecture, ModelConfig, TextConfig, VisionConfig};

use super::lora::LoraSection;

/// Parameter counts of a model, from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    pub language: u64,
    pub vision: u64,
}

impl ParamCount {
    pub fn total(&self) -> u64 {
        self.language + self.vision
    }
}

fn text_params(c: &TextConfig, qk_norm: bool) -> u64 {
    let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (nh, kv) = (c.num_attention_heads, c.num_key_value_heads);
    let bias = if c.attention_bias {
        (nh + 2 * kv) * hd
    } else {
        0
    };
    let norms = if qk_norm { 2 * hd } else { 0 };
    let layer = h * (nh + 2 * kv) * hd + bias + nh * hd * h + 3 * h * i + 2 * h + norms;
    let embed = c.vocab_size * h;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    (embed + head + c.num_hidden_layers * layer + h) as u64
}

/// Qwen2.5-VL's vision tower: patch embedding, blocks (RMSNorm, fused qkv,
/// gated MLP, all with biases) and the 2x2 patch merger.
fn qwen2_5_vision_params(v: &VisionConfig) -> u64 {
    let (h, i) = (v.hidden_size, v.intermediate_size);
    let block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + (2 * h * i + 2 * i) + (i * h + h);
    let m = h * v.spatial_merge_size * v.spatial_merge_size;
    let merger = h + (m * m + m) + (m * v.out_hidden_size + v.out_hidden_size);
    (v.patch_dim() * h + v.depth * block + merger) as u64
}

pub fn param_count(c: &ModelConfig) -> Result<ParamCount> {
    Ok(match (c.architecture, &c.vision) {
        (Architecture::Qwen2, _) => ParamCount {
            language: text_params(&c.text, false),
            vision: 0,
        },
        (Architecture::Qwen3, _) => ParamCount {
            language: text_params(&c.text, true),
            vision: 0,
        },
        (Architecture::Qwen2_5Vl, Some(v)) => ParamCount {
            language: text_params(&c.text, false),
            vision: qwen2_5_vision_params(v),
        },
        (a, _) => bail!("lmmhost plan does not know the parameter layout of {a:?} yet"),
    })
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
    use lmmhost_model::lora::{is_adapter, LANGUAGE_TARGETS};
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
