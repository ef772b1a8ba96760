//! What `lmmhost logits` computes: for a batch of prepared prompts, the full
//! logits and a greedy continuation, written to one safetensors file so that a
//! checkpoint (or a conversion) can be compared with another implementation.
//!
//! File keys: `input_ids` `[B, L]` i64 (left-padded), `attention_mask` `[B, L]`
//! i64, `position_ids` (`[B, L]` or `[3, B, L]`, when given), `logits`
//! `[B, L, V]` f32, `greedy_tokens` `[B, N]` i64 (padded with `pad_token_id`
//! after a stop token), `greedy_logprobs` `[B, N]` f32, `eos_token_ids`,
//! `pad_token_id`; plus `pixel_values` / `image_grid_thw` for images.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::config::Architecture;
use crate::generate::{generate, GenerateConfig};
use crate::lm::{CausalLm, ForwardInputs};
use crate::processor::{Conversation, ImageInput, Message, Part, Processor};
use crate::sampling::{SamplingParams, SeededRng};

pub struct LogitsDump {
    pub tensors: Vec<(String, Tensor)>,
    /// Per prompt: number of real prompt tokens and the greedy continuation (stop token included).
    pub prompt_lens: Vec<i64>,
    pub greedy: Vec<Vec<i64>>,
    /// The greedy continuations as text (chat prompts; empty for token-id prompts).
    pub texts: Vec<String>,
    pub vocab: i64,
}

/// Runs the forward pass and `greedy_tokens` greedy steps over `inputs`.
pub fn compute(
    lm: &dyn CausalLm,
    inputs: &ForwardInputs,
    greedy_tokens: usize,
    pad_token_id: i64,
) -> Result<LogitsDump> {
    let logits = tch::no_grad(|| lm.forward(inputs)).context("forward pass over the prompts")?;
    let vocab = logits.size().last().copied().unwrap_or(0);
    let cfg = GenerateConfig {
        sampling: SamplingParams::greedy(),
        max_new_tokens: greedy_tokens,
        pad_token_id,
        ..Default::default()
    };
    let g =
        generate(lm, inputs, &cfg, &mut SeededRng::new(0), None).context("greedy continuation")?;
    let b = inputs.input_ids.size()[0];
    // Pad to exactly N columns: generation stops early once every row is done.
    let n = greedy_tokens as i64;
    let steps = g.tokens.size()[1];
    let greedy_t = Tensor::full([b, n], pad_token_id, (Kind::Int64, Device::Cpu));
    let greedy_lp = Tensor::zeros([b, n], (Kind::Float, Device::Cpu));
    if steps > 0 {
        greedy_t.narrow(1, 0, steps).copy_(&g.tokens);
        greedy_lp.narrow(1, 0, steps).copy_(&g.logprobs);
    }
    let cpu = |t: &Tensor| t.to_device(Device::Cpu);
    let mut tensors = vec![
        ("input_ids".to_string(), cpu(inputs.input_ids)),
        ("attention_mask".to_string(), cpu(inputs.attention_mask)),
        ("logits".to_string(), cpu(&logits.to_kind(Kind::Float))),
        ("greedy_tokens".to_string(), greedy_t),
        ("greedy_logprobs".to_string(), greedy_lp),
        (
            "eos_token_ids".to_string(),
            Tensor::from_slice(lm.eos_token_ids()),
        ),
        (
            "pad_token_id".to_string(),
            Tensor::from_slice(&[pad_token_id]),
        ),
    ];
    if let Some(p) = inputs.position_ids {
        tensors.push(("position_ids".to_string(), cpu(p)));
    }
    if let Some(p) = inputs.pixel_values {
        tensors.push(("pixel_values".to_string(), cpu(&p.to_kind(Kind::Float))));
    }
    if let Some(g) = inputs.image_grid_thw {
        tensors.push(("image_grid_thw".to_string(), cpu(g)));
    }
    let prompt_lens = Vec::<i64>::try_from(
        inputs
            .attention_mask
            .sum_dim_intlist([1].as_slice(), false, Kind::Int64)
            .to_device(Device::Cpu),
    )
    .context("reading prompt lengths")?;
    Ok(LogitsDump {
        tensors,
        prompt_lens,
        greedy: g.completions.into_iter().map(|c| c.token_ids).collect(),
        texts: Vec::new(),
        vocab,
    })
}

impl LogitsDump {
    pub fn write(&self, out: &Path) -> Result<()> {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let contiguous: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.contiguous()))
            .collect();
        Tensor::write_safetensors(&contiguous, out)
            .with_context(|| format!("cannot write {}", out.display()))
    }

    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }
}

/// Token-id prompts of the JSONL file, left-padded into one batch.
pub fn read_id_prompts(path: &Path, pad: i64, vocab: i64) -> Result<(Tensor, Tensor)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let mut rows: Vec<Vec<i64>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        let ids = v
            .get("input_ids")
            .and_then(|x| x.as_array())
            .with_context(|| {
                format!(
                    "{}: expected an \"input_ids\" list or a \"messages\" list",
                    at()
                )
            })?;
        let ids: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(j, x)| {
                let id = x
                    .as_i64()
                    .with_context(|| format!("{}: input_ids[{j}] is not an integer", at()))?;
                if id < 0 || id >= vocab {
                    bail!(
                        "{}: input_ids[{j}] = {id} is outside the vocabulary (0..{vocab})",
                        at()
                    );
                }
                Ok(id)
            })
            .collect::<Result<_>>()?;
        if ids.is_empty() {
            bail!("{}: empty prompt", at());
        }
        rows.push(ids);
    }
    if rows.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    let l = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * l);
    let mut mask = Vec::with_capacity(rows.len() * l);
    for r in &rows {
        ids.extend(std::iter::repeat_n(pad, l - r.len()).chain(r.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, l - r.len()).chain(std::iter::repeat_n(1, r.len())));
    }
    let shape = [rows.len() as i64, l as i64];
    Ok((
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    ))
}

/// Prompt rows of a JSONL file.
pub enum PromptFile {
    /// `{"input_ids": [...]}` rows.
    Ids,
    /// `{"messages": [...]}` rows, parsed.
    Chats(Vec<Conversation>),
}

/// Reads the JSONL once to see which kind of rows it holds (all rows must agree)
/// and parses chat rows; image paths are taken relative to the file.
pub fn read_prompt_file(path: &Path) -> Result<PromptFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut chats = Vec::new();
    let mut ids_rows = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{at}: not valid JSON"))?;
        match v.get("messages") {
            Some(m) => chats.push(parse_messages(m, base).with_context(|| at.clone())?),
            None => ids_rows += 1,
        }
    }
    match (chats.is_empty(), ids_rows) {
        (true, _) => Ok(PromptFile::Ids),
        (false, 0) => Ok(PromptFile::Chats(chats)),
        _ => bail!(
            "{}: mixes \"messages\" rows and \"input_ids\" rows; use one kind",
            path.display()
        ),
    }
}

/// OpenAI-like messages: `{"role": "user", "content": "text"}` or content as a
/// list of parts `{"type": "text", "text": ..}` / `{"type": "image", "image": "a.png"}`
/// (also `"path"`, or `{"type": "image_url", "image_url": {"url": "file://a.png"}}`).
pub fn parse_messages(v: &serde_json::Value, base: &Path) -> Result<Conversation> {
    let list = v.as_array().context("\"messages\" must be a list")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(|r| r.as_str())
            .with_context(|| format!("messages[{i}]: missing \"role\" string"))?;
        let parts = match m.get("content") {
            Some(serde_json::Value::String(t)) => vec![Part::Text(t.clone())],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    parse_part(p, base).with_context(|| format!("messages[{i}].content[{j}]"))
                })
                .collect::<Result<_>>()?,
            _ => bail!("messages[{i}]: \"content\" must be a string or a list of parts"),
        };
        out.push(Message {
            role: role.to_string(),
            parts,
        });
    }
    Ok(out)
}

fn parse_part(p: &serde_json::Value, base: &Path) -> Result<Part> {
    let ty = p
        .get("type")
        .and_then(|t| t.as_str())
        .context("missing \"type\"")?;
    let image = |s: &str| {
        let s = s.strip_prefix("file://").unwrap_or(s);
        Part::Image(ImageInput::Path(base.join(s)))
    };
    match ty {
        "text" => Ok(Part::Text(
            p.get("text")
                .and_then(|t| t.as_str())
                .context("text part without \"text\"")?
                .to_string(),
        )),
        "image" => {
            let s = p
                .get("image")
                .or_else(|| p.get("path"))
                .and_then(|t| t.as_str());
            Ok(image(s.context("image part without an \"image\" path")?))
        }
        "image_url" => {
            let s = p
                .pointer("/image_url/url")
                .or_else(|| p.get("image_url"))
                .and_then(|t| t.as_str());
            Ok(image(s.context("image_url part without a url")?))
        }
        other => bail!("unknown part type {other:?} (expected text, image or image_url)"),
    }
}

/// `lmmhost logits`: loads the checkpoint, reads the prompts, computes and writes the dump.
pub fn run(
    model_dir: &Path,
    prompts: &Path,
    out: &Path,
    greedy_tokens: usize,
    device: Device,
    kind: Kind,
) -> Result<LogitsDump> {
    let loaded = checkpoint::load(model_dir, device, kind)
        .with_context(|| format!("loading checkpoint {}", model_dir.display()))?;
    let cfg = &loaded.config;
    let pad = cfg
        .pad_token_id
        .or_else(|| cfg.eos_token_ids.first().copied())
        .unwrap_or(0);
    let lm = loaded.model.as_lm();
    let mut dump = match read_prompt_file(prompts)? {
        PromptFile::Ids => {
            let (ids, mask) = read_id_prompts(prompts, pad, cfg.text.vocab_size)?;
            let (ids, mask) = (ids.to_device(device), mask.to_device(device));
            let inputs = ForwardInputs {
                input_ids: &ids,
                attention_mask: &mask,
                position_ids: None,
                pixel_values: None,
                image_grid_thw: None,
            };
            compute(lm, &inputs, greedy_tokens, pad)?
        }
        PromptFile::Chats(chats) => {
            let processor = Processor::from_dir(model_dir).with_context(|| {
                format!(
                    "chat prompts need the tokenizer files in {}",
                    model_dir.display()
                )
            })?;
            let batch = processor
                .prepare(&chats, true)
                .with_context(|| format!("preparing {}", prompts.display()))?;
            let dev = |t: &Tensor| t.to_device(device);
            let (ids, mask, pos) = (
                dev(&batch.input_ids),
                dev(&batch.attention_mask),
                dev(&batch.position_ids),
            );
            let pix = batch
                .pixel_values
                .as_ref()
                .map(|p| p.to_kind(kind).to_device(device));
            let grid = batch.image_grid_thw.as_ref().map(dev);
            let inputs = ForwardInputs {
                input_ids: &ids,
                attention_mask: &mask,
                // Qwen2 text models take [B, L] positions derived from the mask.
                position_ids: (cfg.architecture == Architecture::Qwen2_5Vl).then_some(&pos),
                pixel_values: pix.as_ref(),
                image_grid_thw: grid.as_ref(),
            };
            let mut d = compute(lm, &inputs, greedy_tokens, pad)?;
            d.texts = d
                .greedy
                .iter()
                .map(|g| processor.tokenizer.decode(g, true))
                .collect::<Result<_>>()
                .context("decoding the greedy continuations")?;
            d
        }
    };
    if dump.texts.is_empty() {
        dump.texts = vec![String::new(); dump.greedy.len()];
    }
    dump.write(out)?;
    Ok(dump)
}
