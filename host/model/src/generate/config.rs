//! What generation takes and gives: settings, the prompts, completions.

use anyhow::{Context, Result};
use tch::Tensor;

use crate::lm::ForwardInputs;
use crate::sampling::SamplingParams;

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
    /// CPU threads generating at once, each for its share of the prompts
    /// (see [`crate::parallel`]); the samples are the same for any count.
    /// Ignored on CUDA.
    pub workers: usize,
    /// Most keys/values held at once, in tokens (prompts and responses,
    /// padding included; split evenly between workers). Rows wait for a slot
    /// when it is reached. `None`: every row at once.
    pub kv_cache_tokens: Option<usize>,
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
            kv_cache_tokens: None,
        }
    }
}

/// The prompts of one generation: a left-padded batch (with its images), and
/// what the engine needs to take prompts out of it one by one.
#[derive(Clone, Copy)]
pub struct PromptBatch<'a> {
    pub inputs: ForwardInputs<'a>,
    /// Images of each prompt, in batch order (`pixel_values` and
    /// `image_grid_thw` hold them prompt after prompt). Needed when prompts
    /// with images are prefilled in more than one batch (under a KV budget).
    pub images_per_prompt: Option<&'a [usize]>,
    /// The key of each prompt's random streams (default: its index): sample
    /// j of a prompt with key k draws from the stream keyed by (seed, k, j),
    /// whatever else is generated with it.
    pub keys: Option<&'a [u64]>,
}

impl<'a> From<&ForwardInputs<'a>> for PromptBatch<'a> {
    fn from(inputs: &ForwardInputs<'a>) -> Self {
        PromptBatch {
            inputs: *inputs,
            images_per_prompt: None,
            keys: None,
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

/// How the engine ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Keys/values allocated, in tokens (prompt slots x longest prompt + row
    /// slots x (max_new_tokens - 1), summed over workers).
    pub kv_tokens: usize,
    /// Rows decoded at once at most, summed over workers.
    pub row_slots: usize,
    /// Prompts held at once at most, summed over workers.
    pub prompt_slots: usize,
    /// Prefill forward passes.
    pub prefills: usize,
    /// Decode forward passes (one token for every live row each).
    pub decode_steps: usize,
    /// Row-steps of those passes spent on a slot without a running row.
    pub idle_row_steps: usize,
}

/// The result of [`super::generate`], rows in prompt-major order: completion
/// `i * n + j` is sample j of prompt i.
pub struct Generation {
    pub completions: Vec<Completion>,
    /// `[B * n, steps]` int64 on the host, `pad_token_id` after each sequence's end.
    pub tokens: Tensor,
    /// `[B * n, steps]` float32 on the host, 0 after each sequence's end.
    pub logprobs: Tensor,
    /// The longest completion.
    pub steps: usize,
    pub stats: EngineStats,
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
