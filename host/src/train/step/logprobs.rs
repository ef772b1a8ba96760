//! Log-probabilities of rollout rows without gradients: the old-policy and
//! reference passes. Each distinct prompt is computed once, its keys and
//! values shared by the responses of its group.

use anyhow::Result;
use lmmhost_model::lm::{CausalLm, Entropy};
use lmmhost_model::parallel::{map_jobs, ReadOnlyShared};
use tch::{Device, Kind, Tensor};

use crate::train::policy::Policy;
use crate::train::rollout::{shared_prompt_batch, Row, SharedPromptBatch};

/// Response log-probs `[b, Lr]` (and entropies) of a set of rows under
/// `softmax(logits / temperature)`, each distinct prompt computed once (its
/// keys/values shared by the responses of its group): the numbers of
/// running every row whole, about half the work for GRPO's 8 samples per
/// prompt.
pub fn shared_response_stats(
    lm: &dyn CausalLm,
    sb: &SharedPromptBatch,
    entropy: Entropy,
    temperature: f64,
) -> Result<(Tensor, Option<Tensor>)> {
    lm.response_token_stats(
        &sb.prompt_inputs(),
        &sb.group,
        &sb.responses,
        &sb.response_mask,
        entropy,
        temperature,
    )
}

/// How a no-grad log-prob pass runs.
#[derive(Debug, Clone, Copy)]
pub struct LogprobPass {
    /// Rows per forward pass.
    pub chunk: usize,
    /// Instead of `chunk`: consecutive rows per forward pass while their
    /// padded tokens (rows x (longest prompt + longest response)) stay
    /// within this budget.
    pub chunk_tokens: Option<usize>,
    pub pad: i64,
    pub multimodal: bool,
    pub device: Device,
    /// Threads the chunks are spread over (see `lmmhost_model::parallel`).
    pub workers: usize,
    /// Log-probs of `softmax(logits / temperature)`.
    pub temperature: f64,
}

impl LogprobPass {
    /// A pass with `policy`'s processor, device and workers.
    pub fn of(policy: &Policy, chunk: usize, temperature: f64) -> LogprobPass {
        LogprobPass {
            chunk,
            chunk_tokens: None,
            pad: policy.processor.tokenizer.pad_id,
            multimodal: policy.is_multimodal(),
            device: policy.device,
            workers: policy.workers,
            temperature,
        }
    }
}

/// Consecutive ranges of `rows`, one per forward pass: `chunk` rows each,
/// or with `chunk_tokens`, as many rows as fit the padded-token budget (at
/// least one).
pub fn chunk_ranges(rows: &[Row], pass: &LogprobPass) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let end = match pass.chunk_tokens {
            None => (start + pass.chunk.max(1)).min(rows.len()),
            Some(budget) => {
                let (mut prompt, mut response, mut end) = (0, 0, start);
                while end < rows.len() {
                    let p = prompt.max(rows[end].prompt.len());
                    let r = response.max(rows[end].response.len());
                    if end > start && (end + 1 - start) * (p + r) > budget {
                        break;
                    }
                    (prompt, response, end) = (p, r, end + 1);
                }
                end
            }
        };
        out.push(start..end);
        start = end;
    }
    out
}

/// Per-row response log-probs under `lm`, without gradients (old policy and
/// reference passes).
pub fn rows_logprobs(lm: &dyn CausalLm, rows: &[Row], pass: &LogprobPass) -> Result<Vec<Vec<f32>>> {
    let LogprobPass {
        pad,
        multimodal,
        device,
        workers,
        temperature,
        ..
    } = *pass;
    // SAFETY: the workers run no_grad forward passes on the model.
    let lm = unsafe { ReadOnlyShared::new(lm) };
    let mut out = Vec::with_capacity(rows.len());
    // In waves of one chunk per worker, so that only a wave's inputs and
    // activations exist at a time, however many rows the batch has.
    for wave in chunk_ranges(rows, pass).chunks(workers.max(1)) {
        // Batches are built here: rows share their prompt by `Rc`, which
        // stays on this thread; the workers get tensors only.
        let jobs: Vec<(SharedPromptBatch, Vec<i64>)> = wave
            .iter()
            .map(|range| {
                let part = &rows[range.clone()];
                let refs: Vec<&Row> = part.iter().collect();
                let lens = part.iter().map(|r| r.response.len() as i64).collect();
                (shared_prompt_batch(&refs, pad, multimodal, device), lens)
            })
            .collect();
        let parts = map_jobs(jobs, workers, |_, (sb, lens)| {
            let (lp, _) =
                tch::no_grad(|| shared_response_stats(*lm.get(), &sb, Entropy::Off, temperature))?;
            let lp = lp.to_device(Device::Cpu).to_kind(Kind::Float);
            lens.iter()
                .enumerate()
                .map(|(i, &n)| Ok(Vec::<f32>::try_from(lp.get(i as i64).narrow(0, 0, n))?))
                .collect::<Result<Vec<_>>>()
        })?;
        out.extend(parts.into_iter().flatten());
    }
    Ok(out)
}
