//! The workload of `lmmhost bench grpo --model ... --prompt-tokens ...`: a
//! shipped benchmark experiment (configs/bench/w1.toml or w2.toml) with its
//! model swapped for any config (random weights, the benchmark's character
//! tokenizer) and its prompts for ones of a chosen length, written to a
//! temporary folder as an experiment file the normal loader reads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lmmhost_model::config::ModelConfig;
use lmmhost_model::processor::chat_template::{ImageInput, Message, Part};
use lmmhost_model::processor::Processor;
use serde_json::Value;

/// A folder removed on drop.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What replaces the shipped workload's model and prompts.
pub struct Custom<'a> {
    /// A preset, config.json, directory or configs/models/ name.
    pub model: Option<&'a str>,
    /// Prompt length in tokens after the chat template (image tokens included).
    pub prompt_tokens: Option<usize>,
    /// Prompts written (at least the prompts a step takes).
    pub prompt_count: usize,
    /// Side in pixels of the one square image per prompt of a vision-language model.
    pub image_side: u32,
}

/// The special token ids of the benchmark tokenizers, by the keys a
/// config.json names them with.
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
];

/// Where the tokenizer (and image preprocessor) for an architecture comes
/// from: the W1 model's for text, W2's for Qwen2.5-VL, the tiny Qwen3-VL
/// fixture's for Qwen3-VL (patch 16).
fn tokenizer_source(model_type: &str) -> Result<&'static str> {
    Ok(match model_type {
        "qwen2" | "qwen3" => "configs/models/char-qwen2",
        "qwen2_5_vl" => "configs/bench/w2-model",
        "qwen3_vl" => "configs/models/tiny-qwen3-vl",
        other => bail!("model_type {other:?}: no benchmark tokenizer for it"),
    })
}

/// Writes the experiment file into `scratch` and returns its path.
pub fn prepare(base: &Path, custom: &Custom, scratch: &Path) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(base).with_context(|| format!("cannot read {}", base.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", base.display()))?;
    let base_dir = base.parent().unwrap_or(Path::new("."));
    let absolute = |p: &str| -> Result<String> {
        let joined = base_dir.join(p);
        let abs = std::path::absolute(&joined)
            .with_context(|| format!("cannot resolve {}", joined.display()))?;
        Ok(abs.to_string_lossy().into_owned())
    };
    // The file moves to the scratch folder: its relative paths must not.
    if let Some(toml::Value::Table(plugins)) = table.get_mut("plugins") {
        for (_, entry) in plugins.iter_mut() {
            if let Some(toml::Value::String(w)) = entry.get_mut("wasm") {
                *w = absolute(w)?;
            }
        }
    }
    for (section, key) in [("model", "path")] {
        if let Some(toml::Value::String(p)) = table.get_mut(section).and_then(|s| s.get_mut(key)) {
            *p = absolute(p)?;
        }
    }
    if let Some(toml::Value::String(p)) = table.get_mut("output_dir") {
        *p = absolute(p)?;
    }

    let model_dir = match custom.model {
        Some(config) => {
            let dir = scratch.join("model");
            write_model_dir(config, &dir)?;
            set(
                &mut table,
                "model",
                "path",
                dir.to_string_lossy().as_ref().into(),
            );
            set(&mut table, "model", "init", "random".into());
            dir
        }
        None => PathBuf::from(
            table
                .get("model")
                .and_then(|m| m.get("path"))
                .and_then(|p| p.as_str())
                .context("the experiment has no model.path")?,
        ),
    };

    if let Some(tokens) = custom.prompt_tokens {
        let file = scratch.join("prompts.jsonl");
        write_prompts(
            &model_dir,
            &file,
            tokens,
            custom.prompt_count,
            custom.image_side,
        )?;
        // Beside the workload's other plugins.
        let plugin_dir = table
            .get("plugins")
            .and_then(|p| p.as_table())
            .and_then(|p| p.values().find_map(|e| e.get("wasm")?.as_str()))
            .and_then(|w| Path::new(w).parent().map(Path::to_path_buf))
            .context("the experiment names no plugin .wasm to find loader-jsonl beside")?;
        let jsonl = plugin_dir
            .join("loader-jsonl.wasm")
            .to_string_lossy()
            .into_owned();
        let mut plugin = toml::Table::new();
        plugin.insert("wasm".into(), jsonl.into());
        set(&mut table, "plugins", "jsonl", plugin.into());
        let mut ds = toml::Table::new();
        ds.insert("loader".into(), "jsonl".into());
        ds.insert(
            "files".into(),
            toml::Value::Array(vec![file.to_string_lossy().as_ref().into()]),
        );
        ds.insert(
            "images".into(),
            toml::Value::Array(vec![scratch.to_string_lossy().as_ref().into()]),
        );
        set(&mut table, "datasets", "train", ds.into());
        // Exactly the prompt: a KV budget is checked against this length.
        set(
            &mut table,
            "rollout",
            "max_prompt_tokens",
            toml::Value::Integer(tokens as i64),
        );
    }
    let out = scratch.join("experiment.toml");
    std::fs::write(&out, toml::to_string(&table)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

/// The model folder: the config with its special token ids replaced by the
/// benchmark tokenizer's (sizes unchanged), beside that tokenizer's files.
fn write_model_dir(config: &str, dir: &Path) -> Result<()> {
    let mut raw = lmmhost_model::bench::resolve_config(config)?;
    let model_type = raw
        .get("model_type")
        .and_then(Value::as_str)
        .with_context(|| format!("model config {config:?} has no model_type"))?
        .to_string();
    let source = Path::new(tokenizer_source(&model_type)?);
    let src_cfg_path = source.join("config.json");
    let src_cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&src_cfg_path).with_context(|| {
            format!(
                "cannot read {} (run from the repository root or the packed folder)",
                src_cfg_path.display()
            )
        })?)
        .with_context(|| format!("{} is not valid JSON", src_cfg_path.display()))?;
    let special = |key: &str| {
        src_cfg
            .get(key)
            .or_else(|| src_cfg.get("text_config").and_then(|t| t.get(key)))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let top = raw
        .as_object_mut()
        .with_context(|| format!("model config {config:?} is not a JSON object"))?;
    for key in SPECIAL_KEYS {
        if top.contains_key(key) || !special(key).is_null() {
            top.insert(key.to_string(), special(key));
        }
    }
    if let Some(Value::Object(t)) = top.get_mut("text_config") {
        for key in SPECIAL_KEYS {
            if t.contains_key(key) {
                t.insert(key.to_string(), special(key));
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&raw)?)
        .with_context(|| format!("cannot write {}", dir.join("config.json").display()))?;
    for entry in
        std::fs::read_dir(source).with_context(|| format!("cannot list {}", source.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        if path.is_file()
            && name != "config.json"
            && !name.to_string_lossy().ends_with(".safetensors")
        {
            std::fs::copy(&path, dir.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    let cfg = ModelConfig::from_dir(dir).with_context(|| format!("model config {config:?}"))?;
    let vocab = cfg.text.vocab_size;
    let highest = cfg.eos_token_ids.iter().copied().max().unwrap_or(0);
    if vocab <= highest {
        bail!(
            "model config {config:?}: vocab_size {vocab} is too small for the benchmark \
             tokenizer of {} (special ids up to {highest})",
            source.display()
        );
    }
    Ok(())
}

/// EasyR1-layout rows (`problem`, `answer`, `images`) whose chat-templated
/// prompt is `tokens` long: filler words sized by tokenizing the template
/// around them with the model folder's processor.
fn write_prompts(
    model_dir: &Path,
    file: &Path,
    tokens: usize,
    count: usize,
    image_side: u32,
) -> Result<()> {
    let processor = Processor::from_dir(model_dir)
        .with_context(|| format!("the benchmark tokenizer in {}", model_dir.display()))?;
    let multimodal = model_dir.join("preprocessor_config.json").is_file();
    let dir = file.parent().unwrap_or(Path::new("."));
    let image = dir.join("image.png");
    if multimodal {
        // Four grey quadrants: an image is an image to the vision tower.
        let img = image::RgbImage::from_fn(image_side, image_side, |x, y| {
            let q = (2 * x / image_side.max(1)) + 2 * (2 * y / image_side.max(1));
            image::Rgb([(40 + 60 * q) as u8; 3])
        });
        img.save(&image)
            .with_context(|| format!("cannot write {}", image.display()))?;
    }
    let suffix = " Answer with a number.";
    let length = |problem: &str| -> Result<usize> {
        let mut parts = Vec::new();
        if multimodal {
            parts.push(Part::Image(ImageInput::Path(image.clone())));
        }
        parts.push(Part::Text(problem.to_string()));
        let conv = vec![Message {
            role: "user".into(),
            parts,
        }];
        Ok(processor.encode_one(&conv, true, "bench prompt")?.len())
    };
    let bare = length(suffix)?;
    if bare > tokens {
        bail!("--prompt-tokens {tokens} is shorter than the chat template and image alone ({bare} tokens)");
    }
    let words = [
        "red ", "blue ", "green ", "square ", "circle ", "count ", "the ",
    ];
    let mut filler = String::new();
    let mut i = 0;
    // One character is one token in the benchmark tokenizers: fill by
    // characters, then trim to the exact length.
    while length(&format!("{filler}{suffix}"))? < tokens {
        filler.push_str(words[i % words.len()]);
        i += 1;
    }
    while length(&format!("{filler}{suffix}"))? > tokens && !filler.is_empty() {
        filler.pop();
    }
    let problem = format!("{filler}{suffix}");
    let mut out = String::new();
    for n in 0..count.max(1) {
        let mut row = serde_json::json!({ "problem": problem, "answer": (n % 10).to_string() });
        if multimodal {
            row["images"] = serde_json::json!([image.to_string_lossy()]);
        }
        out.push_str(&row.to_string());
        out.push('\n');
    }
    std::fs::write(file, out).with_context(|| format!("cannot write {}", file.display()))
}
