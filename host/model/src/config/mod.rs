//! `config.json` of the supported checkpoints (`Qwen2ForCausalLM`,
//! `Qwen3ForCausalLM`, `Qwen2_5_VLForConditionalGeneration`,
//! `Qwen3VLForConditionalGeneration`), in the flat layout older transformers
//! wrote (text fields at the top, `rope_scaling` + `rope_theta`) and the
//! nested layout of transformers 5 (`text_config` / `vision_config`,
//! `rope_parameters`).

mod json;
#[cfg(test)]
mod tests;
mod vision;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

use self::json::{i64_list, opt_i64, token_ids, Ctx, Obj};
use crate::rope::MRope;
use crate::weights::KeyLayout;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen2ForCausalLM` (Qwen2 / Qwen2.5 text models).
    Qwen2,
    /// `Qwen2_5_VLForConditionalGeneration`.
    Qwen2_5Vl,
    /// `Qwen3ForCausalLM` (dense Qwen3 text models).
    Qwen3,
    /// `Qwen3VLForConditionalGeneration` (dense Qwen3-VL).
    Qwen3Vl,
}

impl Architecture {
    pub const ALL: [Architecture; 4] = [
        Architecture::Qwen2,
        Architecture::Qwen2_5Vl,
        Architecture::Qwen3,
        Architecture::Qwen3Vl,
    ];

    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen2_5Vl => "Qwen2_5_VLForConditionalGeneration",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Qwen3Vl => "Qwen3VLForConditionalGeneration",
        }
    }

    /// transformers' `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen2_5Vl => "qwen2_5_vl",
            Architecture::Qwen3 => "qwen3",
            Architecture::Qwen3Vl => "qwen3_vl",
        }
    }

    /// Whether the model takes images (and M-RoPE positions `[3, B, L]`).
    pub fn is_multimodal(self) -> bool {
        matches!(self, Architecture::Qwen2_5Vl | Architecture::Qwen3Vl)
    }

    /// The key layout a checkpoint read in `read` is written back in, so that
    /// transformers loads it: transformers 5 maps Qwen2.5-VL's published
    /// layout to its modules but reads Qwen3-VL only in its module layout.
    pub fn save_layout(self, read: KeyLayout) -> KeyLayout {
        match self {
            Architecture::Qwen3Vl => KeyLayout::Nested,
            _ => read,
        }
    }

    /// rope_theta when config.json names none (transformers' default).
    fn default_rope_theta(self) -> f64 {
        match self {
            Architecture::Qwen3Vl => 500_000.0,
            _ => 10_000.0,
        }
    }

    fn from_hf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.hf_name() == name)
    }
}

/// The decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// How M-RoPE splits the rotary frequencies over (t, h, w); None for plain 1D rope.
    pub mrope: Option<MRope>,
    /// Biases on the q/k/v projections (Qwen2: q/k/v; Qwen3: q/k/v/o when set).
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
}

/// A vision tower: Qwen2.5-VL's (windows, RMSNorm, SwiGLU) or Qwen3-VL's
/// (learned position grid, LayerNorm, GELU, DeepStack). Fields of the other
/// tower keep neutral values (0, empty).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_heads: i64,
    pub out_hidden_size: i64,
    pub in_channels: i64,
    pub patch_size: i64,
    pub temporal_patch_size: i64,
    pub spatial_merge_size: i64,
    pub rope_theta: f64,
    /// Qwen2.5-VL: window side in pixels.
    pub window_size: i64,
    /// Qwen2.5-VL: blocks with full attention (the others attend within windows).
    pub fullatt_block_indexes: Vec<i64>,
    pub tokens_per_second: f64,
    /// Qwen3-VL: entries of the learned square position grid.
    pub num_position_embeddings: i64,
    /// Qwen3-VL: blocks whose outputs feed the first decoder layers.
    pub deepstack_visual_indexes: Vec<i64>,
}

impl VisionConfig {
    /// Length of one flattened patch in `pixel_values`: C * T * P * P.
    pub fn patch_dim(&self) -> i64 {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub text: TextConfig,
    pub vision: Option<VisionConfig>,
    pub image_token_id: Option<i64>,
    pub video_token_id: Option<i64>,
    pub vision_start_token_id: Option<i64>,
    pub vision_end_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    /// From config.json, extended by generation_config.json when present.
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// The file as read; written back unchanged on save.
    pub raw: Value,
    pub path: PathBuf,
}

impl ModelConfig {
    /// Reads `dir/config.json` and, if present, the eos ids of `dir/generation_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let mut cfg = Self::from_json_str(&text, &path)?;
        let gen_path = dir.join("generation_config.json");
        if gen_path.exists() {
            let g: Value = std::fs::read_to_string(&gen_path)
                .with_context(|| format!("cannot read {}", gen_path.display()))
                .and_then(|t| {
                    serde_json::from_str(&t)
                        .with_context(|| format!("{} is not valid JSON", gen_path.display()))
                })?;
            for id in token_ids(g.get("eos_token_id"), &gen_path, "eos_token_id")? {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
            if cfg.pad_token_id.is_none() {
                cfg.pad_token_id = opt_i64(g.get("pad_token_id"), &gen_path, "pad_token_id")?;
            }
        }
        Ok(cfg)
    }

    /// Parses the text of a config.json; `path` only names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: Value = serde_json::from_str(text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let top = raw.as_object().with_context(|| {
            format!(
                "{}: expected a JSON object at the top level",
                path.display()
            )
        })?;
        let architecture = match top
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
        {
            Some(Value::String(s)) => Architecture::from_hf_name(s).with_context(|| {
                let names: Vec<&str> = Architecture::ALL.iter().map(|a| a.hf_name()).collect();
                format!(
                    "{}: unsupported architecture {s:?}; lmmhost supports {}",
                    path.display(),
                    names.join(", ")
                )
            })?,
            _ => {
                let model_type = top.get("model_type").and_then(|v| v.as_str());
                Architecture::ALL
                    .into_iter()
                    .find(|a| Some(a.model_type()) == model_type)
                    .with_context(|| {
                        format!(
                            "{}: no \"architectures\" entry and no known \"model_type\"",
                            path.display()
                        )
                    })?
            }
        };
        let ctx = Ctx { path };
        // transformers 5 nests the decoder in text_config; older files keep it flat.
        let text_obj = match top.get("text_config") {
            Some(Value::Object(t)) if architecture.is_multimodal() => t,
            _ => top,
        };
        let text_prefix = if std::ptr::eq(text_obj, top) {
            ""
        } else {
            "text_config."
        };
        let t = Obj {
            map: text_obj,
            prefix: text_prefix,
            ctx: &ctx,
        };
        let qwen3 = matches!(architecture, Architecture::Qwen3 | Architecture::Qwen3Vl);
        let hidden_size = t.req_i64("hidden_size")?;
        let num_attention_heads = t.req_i64("num_attention_heads")?;
        let head_dim = match t.opt_i64("head_dim")? {
            Some(h) => h,
            // Qwen3's head_dim does not follow from hidden_size.
            None if qwen3 => 128,
            None => {
                if hidden_size % num_attention_heads.max(1) != 0 {
                    bail!(
                        "{}: {text_prefix}hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}",
                        path.display()
                    );
                }
                hidden_size / num_attention_heads.max(1)
            }
        };
        // rope_parameters (transformers 5) or rope_scaling + rope_theta (older),
        // in the text object or at the top.
        let rope = [
            text_obj.get("rope_parameters"),
            top.get("rope_parameters"),
            text_obj.get("rope_scaling"),
            top.get("rope_scaling"),
        ]
        .into_iter()
        .flatten()
        .find(|v| v.is_object());
        let rope_type = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        if !matches!(rope_type, "default" | "mrope") {
            bail!(
                "{}: rope type {rope_type:?} is not supported (only default rope / mrope)",
                path.display()
            );
        }
        let rope_theta = match rope.and_then(|r| r.get("rope_theta")) {
            Some(v) => v
                .as_f64()
                .with_context(|| format!("{}: rope_theta must be a number", path.display()))?,
            None => match t.opt_f64("rope_theta")? {
                Some(v) => v,
                None => top
                    .get("rope_theta")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(architecture.default_rope_theta()),
            },
        };
        let mrope_section = match rope.and_then(|r| r.get("mrope_section")) {
            Some(v) => Some(i64_list(v, path, "mrope_section")?),
            None => None,
        };
        let num_key_value_heads = t
            .opt_i64("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads.max(1) != 0 {
            bail!(
                "{}: num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}",
                path.display()
            );
        }
        let hidden_act = t.opt_str("hidden_act")?.unwrap_or("silu");
        if hidden_act != "silu" {
            bail!(
                "{}: {text_prefix}hidden_act {hidden_act:?} is not supported (silu only)",
                path.display()
            );
        }
        if t.opt_bool("use_sliding_window")?.unwrap_or(false) {
            bail!(
                "{}: use_sliding_window=true is not supported",
                path.display()
            );
        }
        let tie_word_embeddings = match top.get("tie_word_embeddings") {
            Some(v) => v.as_bool().with_context(|| {
                format!("{}: tie_word_embeddings must be a boolean", path.display())
            })?,
            None => t.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        };
        let mrope = match architecture {
            // Without explicit sections, transformers' default split.
            Architecture::Qwen2_5Vl => Some(MRope::Sections(
                mrope_section.unwrap_or_else(|| vec![16, 24, 24]),
            )),
            Architecture::Qwen3Vl => Some(MRope::Interleaved(
                mrope_section.unwrap_or_else(|| vec![24, 20, 20]),
            )),
            Architecture::Qwen2 | Architecture::Qwen3 => None,
        };
        if let Some(MRope::Sections(s) | MRope::Interleaved(s)) = &mrope {
            if s.len() != 3 || s.iter().sum::<i64>() * 2 != head_dim {
                bail!(
                    "{}: mrope_section {s:?} must be 3 numbers summing to head_dim/2 = {}",
                    path.display(),
                    head_dim / 2
                );
            }
        }
        let text = TextConfig {
            vocab_size: t.req_i64("vocab_size")?,
            hidden_size,
            intermediate_size: t.req_i64("intermediate_size")?,
            num_hidden_layers: t.req_i64("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: t.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            mrope,
            attention_bias: if qwen3 {
                t.opt_bool("attention_bias")?.unwrap_or(false)
            } else {
                true
            },
            tie_word_embeddings,
        };
        let vision = if architecture.is_multimodal() {
            let v = match top.get("vision_config") {
                Some(Value::Object(v)) => v,
                _ => bail!("{}: missing \"vision_config\" object", path.display()),
            };
            let v = Obj {
                map: v,
                prefix: "vision_config.",
                ctx: &ctx,
            };
            Some(vision::parse(architecture, &v, &text)?)
        } else {
            None
        };
        let top_obj = Obj {
            map: top,
            prefix: "",
            ctx: &ctx,
        };
        let special = |key: &str| -> Result<Option<i64>> {
            match top_obj.opt_i64(key)? {
                Some(v) => Ok(Some(v)),
                None => t.opt_i64(key),
            }
        };
        let mut eos_token_ids = token_ids(top.get("eos_token_id"), path, "eos_token_id")?;
        if eos_token_ids.is_empty() {
            eos_token_ids = token_ids(text_obj.get("eos_token_id"), path, "eos_token_id")?;
        }
        Ok(ModelConfig {
            architecture,
            image_token_id: special("image_token_id")?,
            video_token_id: special("video_token_id")?,
            vision_start_token_id: special("vision_start_token_id")?,
            vision_end_token_id: special("vision_end_token_id")?,
            bos_token_id: special("bos_token_id")?,
            pad_token_id: special("pad_token_id")?,
            eos_token_ids,
            text,
            vision,
            raw: raw.clone(),
            path: path.to_path_buf(),
        })
    }
}
