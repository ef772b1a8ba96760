//! Batched generation with a KV cache: the prompts are prefilled once, then one
//! token per sequence is decoded per step until every sequence has stopped or
//! `max_new_tokens` is reached.
//!
//! Group sampling (`samples_per_prompt = n`): each prompt (and its images) goes
//! through the model once, then the cache and the last logits are repeated n
//! times along the batch, so the n samples of a prompt share its prefill.
//!
//! Per step the host waits for the device once, to read a single "all finished"
//! flag; tokens and log-probs are written in place into tensors allocated up
//! front and copied to the host once at the end.

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

mod decode;
#[cfg(test)]
mod tests;

use self::decode::{decode_row_chunks, decode_rows, DecodeSettings};
use crate::lm::{CausalLm, ForwardInputs, KvCache};
use crate::sampling::{check_ids_in_vocab, SamplingParams, SeededRng};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Stop tokens are blocked until this many tokens have been generated
    /// (benchmarks use it to fix completion lengths).
    pub min_new_tokens: usize,
    /// Stop tokens on top of the model's EOS ids.
    pub stop_token_ids: Vec<i64>,
    /// Tokens that are never generated (e.g. EOS for fixed-length benchmarks).
    pub blocked_token_ids: Vec<i64>,
    /// Samples per prompt (n of a GRPO group).
    pub samples_per_prompt: usize,
    /// Fills the token slots after a sequence has stopped.
    pub pad_token_id: i64,
    /// CPU threads decoding row chunks at once (see [`crate::parallel`]); the
    /// samples are the same for any count. Ignored on CUDA.
    pub workers: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            sampling: SamplingParams::default(),
            max_new_tokens: 64,
            min_new_tokens: 0,
            stop_token_ids: Vec::new(),
            blocked_token_ids: Vec::new(),
            samples_per_prompt: 1,
            pad_token_id: 0,
            workers: 1,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It generated this stop token (included in `token_ids`).
    Stop(i64),
    /// It reached `max_new_tokens`.
    Length,
}

/// One completion.
#[derive(Debug, Clone)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// Generated ids, the stop token included when there was one.
    pub token_ids: Vec<i64>,
    /// Per generated token, its log-probability under `log_softmax(logits / T)`
    /// of the unfiltered model logits (see [`crate::sampling::Choice`]).
    pub logprobs: Vec<f32>,
    /// The decoded completion without special tokens (empty when no decoder was given).
    pub text: String,
    pub finish: FinishReason,
}

/// The result of [`generate`], rows in prompt-major order: completion
/// `i * n + j` is sample j of prompt i.
pub struct Generation {
    pub completions: Vec<Completion>,
    /// `[B * n, steps]` int64 on the host, `pad_token_id` after each sequence's end.
    pub tokens: Tensor,
    /// `[B * n, steps]` float32 on the host, 0 after each sequence's end.
    pub logprobs: Tensor,
    /// Decode steps run (the longest completion).
    pub steps: usize,
}

/// Turns generated ids into text.
pub trait TokenDecoder {
    /// Decodes without special tokens.
    fn decode(&self, ids: &[i64]) -> Result<String>;
}

impl TokenDecoder for tokenizers::Tokenizer {
    fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| u32::try_from(i).with_context(|| format!("token id {i} cannot be decoded")))
            .collect::<Result<_>>()?;
        std::ops::Deref::deref(self)
            .decode(&ids, true)
            .map_err(|e| anyhow::anyhow!("decoding {} tokens: {e}", ids.len()))
    }
}

impl TokenDecoder for crate::processor::QwenTokenizer {
    fn decode(&self, ids: &[i64]) -> Result<String> {
        crate::processor::QwenTokenizer::decode(self, ids, true)
    }
}

/// Repeats every row of the cache `n` times along the batch (row i becomes
/// rows i*n .. i*n+n-1), so n samples continue from one prefilled prompt.
pub fn repeat_cache(cache: KvCache, n: i64) -> KvCache {
    if n == 1 {
        return cache;
    }
    let rep = |t: &Tensor| t.repeat_interleave_self_int(n, 0, None::<i64>);
    KvCache {
        layers: cache.layers.iter().map(|(k, v)| (rep(k), rep(v))).collect(),
        attention_mask: rep(&cache.attention_mask),
        next_position: rep(&cache.next_position),
        buffers: Vec::new(),
    }
}

/// Generates completions for a left-padded batch of prompts. `rng` is advanced
/// by B*n draws per sampled step (none when greedy); save it afterwards to
/// resume with the same random stream.
pub fn generate(
    model: &dyn CausalLm,
    inputs: &ForwardInputs,
    cfg: &GenerateConfig,
    rng: &mut SeededRng,
    decoder: Option<&dyn TokenDecoder>,
) -> Result<Generation> {
    cfg.sampling.validate()?;
    if cfg.samples_per_prompt == 0 {
        bail!("samples_per_prompt must be at least 1");
    }
    if cfg.min_new_tokens > cfg.max_new_tokens {
        bail!(
            "min_new_tokens ({}) is larger than max_new_tokens ({})",
            cfg.min_new_tokens,
            cfg.max_new_tokens
        );
    }
    let n = cfg.samples_per_prompt as i64;
    let prompts = inputs.input_ids.size()[0];
    let rows = prompts * n;
    let device = inputs.input_ids.device();
    let steps_max = cfg.max_new_tokens as i64;

    let mut stop_ids: Vec<i64> = model.eos_token_ids().to_vec();
    for &id in &cfg.stop_token_ids {
        if !stop_ids.contains(&id) {
            stop_ids.push(id);
        }
    }
    if cfg.max_new_tokens == 0 {
        return Ok(Generation {
            completions: (0..rows as usize)
                .map(|r| Completion {
                    prompt_index: r / n as usize,
                    sample_index: r % n as usize,
                    token_ids: Vec::new(),
                    logprobs: Vec::new(),
                    text: String::new(),
                    finish: FinishReason::Length,
                })
                .collect(),
            tokens: Tensor::zeros([rows, 0], (Kind::Int64, Device::Cpu)),
            logprobs: Tensor::zeros([rows, 0], (Kind::Float, Device::Cpu)),
            steps: 0,
        });
    }

    let (logits, cache) =
        tch::no_grad(|| model.prefill(inputs)).context("prefill of the prompts")?;
    let vocab = logits.size()[1];
    check_ids_in_vocab(&stop_ids, vocab, "stop token ids")?;
    check_ids_in_vocab(&cfg.blocked_token_ids, vocab, "blocked token ids")?;
    check_ids_in_vocab(&[cfg.pad_token_id], vocab, "pad token id")?;
    let logits = if n > 1 {
        logits.repeat_interleave_self_int(n, 0, None::<i64>)
    } else {
        logits
    };
    let cache = repeat_cache(cache, n);
    let ctx = DecodeSettings {
        cfg,
        stop_ids: &stop_ids,
        steps_max,
        device,
    };

    let workers = if device == Device::Cpu {
        cfg.workers.clamp(1, rows as usize)
    } else {
        1
    };
    let (out_tokens, out_logprobs, steps) = if workers == 1 {
        decode_rows(model, logits, cache, &ctx, rng)?
    } else {
        decode_row_chunks(model, logits, cache, &ctx, rng, workers)?
    };

    let tokens = out_tokens.narrow(1, 0, steps).to_device(Device::Cpu);
    let logprobs = out_logprobs.narrow(1, 0, steps).to_device(Device::Cpu);
    let tok_rows: Vec<Vec<i64>> =
        Vec::<Vec<i64>>::try_from(&tokens).context("reading generated tokens")?;
    let lp_rows: Vec<Vec<f32>> =
        Vec::<Vec<f32>>::try_from(&logprobs).context("reading generated log-probs")?;
    let mut completions = Vec::with_capacity(rows as usize);
    for (r, (toks, lps)) in tok_rows.into_iter().zip(lp_rows).enumerate() {
        let end = toks.iter().position(|t| stop_ids.contains(t));
        let (len, finish) = match end {
            Some(i) => (i + 1, FinishReason::Stop(toks[i])),
            None => (toks.len(), FinishReason::Length),
        };
        let token_ids = toks[..len].to_vec();
        let text = match decoder {
            Some(d) => d
                .decode(&token_ids)
                .with_context(|| format!("decoding completion {r}"))?,
            None => String::new(),
        };
        completions.push(Completion {
            prompt_index: r / n as usize,
            sample_index: r % n as usize,
            token_ids,
            logprobs: lps[..len].to_vec(),
            text,
            finish,
        });
    }
    Ok(Generation {
        completions,
        tokens,
        logprobs,
        steps: steps as usize,
    })
}
