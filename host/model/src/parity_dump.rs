//! What `lmmhost logits` computes: for a batch of prepared prompts, the full
//! logits and a greedy continuation, written to one safetensors file so that a
//! checkpoint (or a conversion) can be compared with another implementation.
//!
//! File keys: `input_ids` `[B, L]` i64 (left-padded), `attention_mask` `[B, L]`
//! i64, `position_ids` (`[B, L]` or `[3, B, L]`, when given), `logits`
//! `[B, L, V]` f32, `greedy_tokens` `[B, N]` i64 (padded with `pad_token_id`
//! after a stop token), `greedy_logprobs` `[B, N]` f32, `eos_token_ids`,
//! `pad_token_id`; plus `pixel_values` / `image_grid_thw` for images.

use anyhow::{Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::generate::{generate, GenerateConfig};
use crate::lm::{CausalLm, ForwardInputs};
use crate::processor::Processor;
use crate::prompt_file::{read_id_prompts, read_prompt_file, PromptFile};
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
                // Text models take [B, L] positions derived from the mask.
                position_ids: cfg.architecture.is_multimodal().then_some(&pos),
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
