//! `config.json` of `Qwen2ForCausalLM` and `Qwen2_5_VLForConditionalGeneration`
//! checkpoints, in the flat layout older transformers wrote (text fields at the
//! top, `rope_scaling` + `rope_theta`) and the nested layout of transformers 5
//! (`text_config` / `vision_config`, `rope_parameters`).

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen2ForCausalLM` (Qwen2 / Qwen2.5 text models).
    Qwen2,
    /// `Qwen2_5_VLForConditionalGeneration`.
    Qwen2_5Vl,
}

impl Architecture {
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen2_5Vl => "Qwen2_5_VLForConditionalGeneration",
        }
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
    /// M-RoPE split of the rotary half-dimension into (t, h, w) sections; None for plain 1D rope.
    pub mrope_section: Option<Vec<i64>>,
    pub tie_word_embeddings: bool,
}

/// The Qwen2.5-VL vision tower.
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
    pub window_size: i64,
    pub fullatt_block_indexes: Vec<i64>,
    pub tokens_per_second: f64,
    pub rope_theta: f64,
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
        let arch_name = match top
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
        {
            Some(Value::String(s)) => s.clone(),
            _ => match top.get("model_type").and_then(|v| v.as_str()) {
                Some("qwen2") => "Qwen2ForCausalLM".to_string(),
                Some("qwen2_5_vl") => "Qwen2_5_VLForConditionalGeneration".to_string(),
                _ => bail!(
                    "{}: no \"architectures\" entry and no known \"model_type\"",
                    path.display()
                ),
            },
        };
        let architecture = match arch_name.as_str() {
            "Qwen2ForCausalLM" => Architecture::Qwen2,
            "Qwen2_5_VLForConditionalGeneration" => Architecture::Qwen2_5Vl,
            other => bail!(
                "{}: unsupported architecture {other:?}; lmmhost supports Qwen2ForCausalLM and \
                 Qwen2_5_VLForConditionalGeneration",
                path.display()
            ),
        };
        let ctx = Ctx { path };
        // transformers 5 nests the decoder in text_config; older files keep it flat.
        let text_obj = match top.get("text_config") {
            Some(Value::Object(t)) if architecture == Architecture::Qwen2_5Vl => t,
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
        let hidden_size = t.req_i64("hidden_size")?;
        let num_attention_heads = t.req_i64("num_attention_heads")?;
        let head_dim = match t.opt_i64("head_dim")? {
            Some(h) => h,
            None => hidden_size / num_attention_heads.max(1),
        };
        if hidden_size % num_attention_heads.max(1) != 0 {
            bail!(
                "{}: {text_prefix}hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}",
                path.display()
            );
        }
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
                    .unwrap_or(10000.0),
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
        let mut text = TextConfig {
            vocab_size: t.req_i64("vocab_size")?,
            hidden_size,
            intermediate_size: t.req_i64("intermediate_size")?,
            num_hidden_layers: t.req_i64("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: t.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            mrope_section,
            tie_word_embeddings,
        };
        let mut vision = None;
        if architecture == Architecture::Qwen2_5Vl {
            // Qwen2.5-VL without explicit sections uses transformers' default split.
            let sections = text.mrope_section.get_or_insert_with(|| vec![16, 24, 24]);
            if sections.iter().sum::<i64>() * 2 != head_dim {
                bail!(
                    "{}: mrope_section {sections:?} must sum to head_dim/2 = {}",
                    path.display(),
                    head_dim / 2
                );
            }
            let v = match top.get("vision_config") {
                Some(Value::Object(v)) => v,
                _ => bail!("{}: missing \"vision_config\" object", path.display()),
            };
            let v = Obj {
                map: v,
                prefix: "vision_config.",
                ctx: &ctx,
            };
            let act = v.opt_str("hidden_act")?.unwrap_or("silu");
            if act != "silu" {
                bail!(
                    "{}: vision_config.hidden_act {act:?} is not supported (silu only)",
                    path.display()
                );
            }
            let hidden = v.req_i64("hidden_size")?;
            let heads = v.req_i64("num_heads")?;
            if hidden % heads.max(1) != 0 || (hidden / heads.max(1)) % 4 != 0 {
                bail!(
                    "{}: vision head dim {hidden}/{heads} must be a multiple of 4",
                    path.display()
                );
            }
            let vrope_theta = match v
                .map
                .get("rope_parameters")
                .and_then(|r| r.get("rope_theta"))
            {
                Some(x) => x.as_f64().with_context(|| {
                    format!("{}: vision rope_theta must be a number", path.display())
                })?,
                None => 10000.0,
            };
            let vc = VisionConfig {
                depth: v.req_i64("depth")?,
                hidden_size: hidden,
                intermediate_size: v.req_i64("intermediate_size")?,
                num_heads: heads,
                out_hidden_size: v.opt_i64("out_hidden_size")?.unwrap_or(text.hidden_size),
                in_channels: match v.opt_i64("in_channels")? {
                    Some(c) => c,
                    None => v.opt_i64("in_chans")?.unwrap_or(3),
                },
                patch_size: v.opt_i64("patch_size")?.unwrap_or(14),
                temporal_patch_size: v.opt_i64("temporal_patch_size")?.unwrap_or(2),
                spatial_merge_size: v.opt_i64("spatial_merge_size")?.unwrap_or(2),
                window_size: v.opt_i64("window_size")?.unwrap_or(112),
                fullatt_block_indexes: match v.map.get("fullatt_block_indexes") {
                    Some(x) => i64_list(x, path, "vision_config.fullatt_block_indexes")?,
                    None => Vec::new(),
                },
                tokens_per_second: v.opt_f64("tokens_per_second")?.unwrap_or(2.0),
                rope_theta: vrope_theta,
            };
            if vc.out_hidden_size != text.hidden_size {
                bail!(
                    "{}: vision_config.out_hidden_size {} differs from the text hidden_size {}",
                    path.display(),
                    vc.out_hidden_size,
                    text.hidden_size
                );
            }
            vision = Some(vc);
        } else {
            text.mrope_section = None;
        }
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

struct Ctx<'a> {
    path: &'a Path,
}

/// A JSON object with typed, error-naming getters.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
    ctx: &'a Ctx<'a>,
}

impl Obj<'_> {
    fn missing(&self, key: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: missing key \"{}{key}\"",
            self.ctx.path.display(),
            self.prefix
        )
    }
    fn wrong(&self, key: &str, what: &str, v: &Value) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: \"{}{key}\" must be {what}, found {v}",
            self.ctx.path.display(),
            self.prefix
        )
    }
    fn req_i64(&self, key: &str) -> Result<i64> {
        self.opt_i64(key)?.ok_or_else(|| self.missing(key))
    }
    fn opt_i64(&self, key: &str) -> Result<Option<i64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an integer", v)),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a boolean", v)),
        }
    }
    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }
}

fn opt_i64(v: Option<&Value>, path: &Path, key: &str) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).with_context(|| {
            format!(
                "{}: \"{key}\" must be an integer, found {v}",
                path.display()
            )
        }),
    }
}

fn i64_list(v: &Value, path: &Path, key: &str) -> Result<Vec<i64>> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>())
        .with_context(|| {
            format!(
                "{}: \"{key}\" must be a list of integers, found {v}",
                path.display()
            )
        })
}

/// An id or a list of ids (eos_token_id takes both forms).
fn token_ids(v: Option<&Value>, path: &Path, key: &str) -> Result<Vec<i64>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(list @ Value::Array(_)) => i64_list(list, path, key),
        Some(x) => Ok(vec![x.as_i64().with_context(|| {
            format!(
                "{}: \"{key}\" must be an id or a list of ids, found {x}",
                path.display()
            )
        })?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As published with Qwen2.5-VL-3B-Instruct (flat, rope_scaling, in_chans).
    const FLAT_VL: &str = r#"{
      "architectures": ["Qwen2_5_VLForConditionalGeneration"], "bos_token_id": 151643, "eos_token_id": 151645,
      "vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655,
      "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 11008,
      "max_position_embeddings": 128000, "model_type": "qwen2_5_vl", "num_attention_heads": 16,
      "num_hidden_layers": 36, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false,
      "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
        "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
        "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2, "temporal_patch_size": 2},
      "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 151936
    }"#;

    #[test]
    fn flat_published_vl_config() {
        let c = ModelConfig::from_json_str(FLAT_VL, Path::new("config.json")).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen2_5Vl);
        assert_eq!(c.text.hidden_size, 2048);
        assert_eq!(c.text.head_dim, 128);
        assert_eq!(c.text.num_key_value_heads, 2);
        assert_eq!(c.text.rope_theta, 1_000_000.0);
        assert_eq!(c.text.mrope_section, Some(vec![16, 24, 24]));
        assert!(c.text.tie_word_embeddings);
        assert_eq!(c.text.vocab_size, 151936);
        let v = c.vision.unwrap();
        assert_eq!(v.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert_eq!(v.in_channels, 3);
        assert_eq!(v.patch_dim(), 1176);
        assert_eq!(c.image_token_id, Some(151655));
        assert_eq!(c.vision_start_token_id, Some(151652));
        assert_eq!(c.eos_token_ids, vec![151645]);
    }

    #[test]
    fn nested_transformers5_vl_config() {
        let s = r#"{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "image_token_id": 292,
          "model_type": "qwen2_5_vl", "tie_word_embeddings": false, "vision_start_token_id": 290,
          "text_config": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "rms_norm_eps": 1e-5,
            "eos_token_id": [294, 295], "pad_token_id": 0,
            "rope_parameters": {"mrope_section": [2, 3, 3], "rope_theta": 5000.0, "rope_type": "default"}},
          "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
            "out_hidden_size": 64, "fullatt_block_indexes": [1], "in_channels": 3,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}}}"#;
        let c = ModelConfig::from_json_str(s, Path::new("x/config.json")).unwrap();
        assert_eq!(c.text.rope_theta, 5000.0);
        assert_eq!(c.text.mrope_section, Some(vec![2, 3, 3]));
        assert_eq!(c.text.rms_norm_eps, 1e-5);
        assert!(!c.text.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, vec![294, 295]);
        assert_eq!(c.pad_token_id, Some(0));
        assert_eq!(c.image_token_id, Some(292));
        assert_eq!(c.vision.unwrap().depth, 2);
    }

    #[test]
    fn qwen2_text_config_and_errors() {
        let s = r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
          "rope_theta": 100000.0, "rope_scaling": null, "tie_word_embeddings": true}"#;
        let c = ModelConfig::from_json_str(s, Path::new("config.json")).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen2);
        assert_eq!(c.text.rope_theta, 100000.0);
        assert_eq!(c.text.mrope_section, None);
        assert!(c.vision.is_none());

        let unknown = s.replace("Qwen2ForCausalLM", "LlamaForCausalLM");
        let err = ModelConfig::from_json_str(&unknown, Path::new("m/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m/config.json") && err.contains("\"LlamaForCausalLM\""),
            "{err}"
        );

        let missing = s.replace("\"vocab_size\": 300,", "");
        let err = ModelConfig::from_json_str(&missing, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing key \"vocab_size\""), "{err}");

        let wrong = s.replace("\"hidden_size\": 64", "\"hidden_size\": \"64\"");
        let err = ModelConfig::from_json_str(&wrong, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"hidden_size\" must be an integer"), "{err}");

        let err = ModelConfig::from_json_str("{not json", Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.json is not valid JSON"), "{err}");
    }
}
