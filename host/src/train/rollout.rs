//! Rollouts: prompts through the processor, n completions per prompt with the
//! KV-cached sampler, each completion kept as a self-contained row (its
//! prompt's tokens, positions and images, its response tokens) so batches can
//! be filtered, merged and re-cut into micro-batches freely. Rows share their
//! prompt by `Rc` (tensors are not `Sync`; rows stay on the training thread).

use std::rc::Rc;

use anyhow::{Context, Result};
use lmmhost_model::generate::{generate, FinishReason, GenerateConfig, PromptBatch};
use lmmhost_model::lm::ForwardInputs;
use lmmhost_model::processor::{Conversation, PreparedBatch, Processor};
use lmmhost_model::sampling::{SamplingParams, SeededRng};
use tch::{Device, Tensor};

use super::policy::Policy;

/// One prompt, unpadded.
pub struct PromptData {
    pub ids: Vec<i64>,
    /// `[3, len]` M-RoPE positions (t, h, w), row-major; text models: `0..len` thrice.
    pub positions: Vec<i64>,
    /// `[N_patches, D]` and `[N_images, 3]` of this prompt's images.
    pub pixel_values: Option<Tensor>,
    pub image_grid_thw: Option<Tensor>,
}

impl PromptData {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Splits a prepared (left-padded) batch into per-prompt data.
pub fn split_prompts(b: &PreparedBatch) -> Result<Vec<Rc<PromptData>>> {
    let rows = b.seq_lens.len();
    let l = b.input_ids.size()[1];
    let ids = Vec::<i64>::try_from(b.input_ids.flatten(0, -1))?;
    let pos = Vec::<i64>::try_from(b.position_ids.flatten(0, -1))?;
    let grids: Vec<i64> = match &b.image_grid_thw {
        Some(g) => Vec::<i64>::try_from(g.flatten(0, -1))?,
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(rows);
    let (mut image, mut patch) = (0i64, 0i64);
    let lu = l as usize;
    for r in 0..rows {
        let n = b.seq_lens[r];
        let start = lu - n;
        let row_ids = ids[r * lu + start..(r + 1) * lu].to_vec();
        let mut positions = Vec::with_capacity(3 * n);
        for d in 0..3 {
            let base = d * rows * lu + r * lu;
            positions.extend_from_slice(&pos[base + start..base + lu]);
        }
        let k = b.images_per_sample[r] as i64;
        let (pixel_values, image_grid_thw) = match (&b.pixel_values, &b.image_grid_thw) {
            (Some(pv), Some(g)) if k > 0 => {
                let patches: i64 = (image..image + k)
                    .map(|i| {
                        let i = 3 * i as usize;
                        grids[i] * grids[i + 1] * grids[i + 2]
                    })
                    .sum();
                let out = (pv.narrow(0, patch, patches), g.narrow(0, image, k));
                patch += patches;
                image += k;
                (Some(out.0), Some(out.1))
            }
            _ => (None, None),
        };
        out.push(Rc::new(PromptData {
            ids: row_ids,
            positions,
            pixel_values,
            image_grid_thw,
        }));
    }
    Ok(out)
}

/// One completion of one prompt.
#[derive(Clone)]
pub struct Row {
    pub prompt: Rc<PromptData>,
    /// Index of the prompt in its step (completions of one prompt form a group).
    pub group: usize,
    /// Generated ids, the stop token included when there was one.
    pub response: Vec<i64>,
    /// Each generated token's log-prob under the distribution it was drawn
    /// from, `softmax(logits / T)` before top-k/top-p truncation (what the
    /// trainer recomputes; vLLM's "processed" log-probs would include the
    /// truncation's renormalisation, its "raw" ones are at T = 1).
    pub logprobs: Vec<f32>,
    pub text: String,
    /// It ended with a stop token (not cut by the length limit).
    pub stopped: bool,
}

/// What to sample.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    pub samples_per_prompt: usize,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub blocked_token_ids: Vec<i64>,
    /// Most keys/values held at once, in tokens (see `GenerateConfig::kv_cache_tokens`).
    pub kv_cache_tokens: Option<usize>,
}

/// Prompts prepared for a rollout: the batch of those within the limit.
pub struct PreparedPrompts {
    /// `None` when every prompt was over the limit.
    pub batch: Option<PreparedBatch>,
    /// Indices (into the conversations) of the prompts in `batch`.
    pub kept: Vec<usize>,
    /// Index and token count of each prompt over the limit.
    pub too_long: Vec<(usize, usize)>,
}

/// Prepares prompts, leaving out those longer than `max_prompt_tokens`.
pub fn prepare_prompts(
    processor: &Processor,
    convs: &[Conversation],
    names: &[String],
    max_prompt_tokens: usize,
) -> Result<PreparedPrompts> {
    let mut kept = Vec::new();
    let mut keep = Vec::new();
    let mut too_long = Vec::new();
    for (i, e) in processor
        .encode_named(convs, names, true)?
        .into_iter()
        .enumerate()
    {
        if e.len() <= max_prompt_tokens {
            kept.push(i);
            keep.push(e);
        } else {
            too_long.push((i, e.len()));
        }
    }
    let batch = if keep.is_empty() {
        None
    } else {
        Some(processor.batch(&keep)?)
    };
    Ok(PreparedPrompts {
        batch,
        kept,
        too_long,
    })
}

/// Generates `cfg.samples_per_prompt` completions of every prompt in `batch`;
/// rows come out grouped by prompt, `group` numbered from `group_offset`.
/// `keys`: each prompt's key of its random streams (default: its index in
/// `batch`), so that a prompt's completions do not depend on which other
/// prompts are generated with it.
pub fn roll_out(
    policy: &Policy,
    batch: &PreparedBatch,
    cfg: &RolloutConfig,
    rng: &mut SeededRng,
    group_offset: usize,
    keys: Option<&[u64]>,
) -> Result<Vec<Row>> {
    let prompts = split_prompts(batch)?;
    let device = policy.device;
    let multimodal = policy.is_multimodal();
    let input_ids = batch.input_ids.to_device(device);
    let attention_mask = batch.attention_mask.to_device(device);
    let position_ids = multimodal.then(|| batch.position_ids.to_device(device));
    let pixel_values = batch.pixel_values.as_ref().map(|t| t.to_device(device));
    let image_grid_thw = batch.image_grid_thw.as_ref().map(|t| t.to_device(device));
    let inputs = ForwardInputs {
        input_ids: &input_ids,
        attention_mask: &attention_mask,
        position_ids: position_ids.as_ref(),
        pixel_values: pixel_values.as_ref(),
        image_grid_thw: image_grid_thw.as_ref(),
    };
    let gen_cfg = GenerateConfig {
        sampling: cfg.sampling.clone(),
        max_new_tokens: cfg.max_new_tokens,
        min_new_tokens: cfg.min_new_tokens,
        stop_token_ids: Vec::new(),
        blocked_token_ids: cfg.blocked_token_ids.clone(),
        samples_per_prompt: cfg.samples_per_prompt,
        pad_token_id: policy.processor.tokenizer.pad_id,
        workers: policy.workers,
        kv_cache_tokens: cfg.kv_cache_tokens,
    };
    let prompt_batch = PromptBatch {
        inputs,
        images_per_prompt: None,
        keys,
    };
    let generation = generate(
        policy.lm(),
        prompt_batch,
        &gen_cfg,
        rng,
        Some(&policy.processor.tokenizer),
    )
    .context("generating completions")?;
    Ok(generation
        .completions
        .into_iter()
        .map(|c| Row {
            prompt: prompts[c.prompt_index].clone(),
            group: group_offset + c.prompt_index,
            stopped: matches!(c.finish, FinishReason::Stop(_)),
            response: c.token_ids,
            logprobs: c.logprobs,
            text: c.text,
        })
        .collect())
}

/// A set of rows as distinct prompts (each computed once) plus responses:
/// what [`CausalLm::response_token_stats`] takes. Rows of one prompt share its
/// `Rc`, which is how groups are recognised.
///
/// [`CausalLm::response_token_stats`]: lmmhost_model::lm::CausalLm::response_token_stats
pub struct SharedPromptBatch {
    /// `[G, Lp]` left-padded distinct prompts.
    pub prompt_ids: Tensor,
    pub prompt_mask: Tensor,
    /// `[3, G, Lp]`, or `None` for text-only models.
    pub prompt_positions: Option<Tensor>,
    pub pixel_values: Option<Tensor>,
    pub image_grid_thw: Option<Tensor>,
    /// `[B]` int64: the prompt of each row.
    pub group: Tensor,
    /// `[B, Lr]` right-padded response ids and their float mask.
    pub responses: Tensor,
    pub response_mask: Tensor,
}

impl SharedPromptBatch {
    pub fn prompt_inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            input_ids: &self.prompt_ids,
            attention_mask: &self.prompt_mask,
            position_ids: self.prompt_positions.as_ref(),
            pixel_values: self.pixel_values.as_ref(),
            image_grid_thw: self.image_grid_thw.as_ref(),
        }
    }

    pub fn response_len(&self) -> i64 {
        self.response_mask.size()[1]
    }
}

/// Builds a [`SharedPromptBatch`] of `rows` on `device`.
pub fn shared_prompt_batch(
    rows: &[&Row],
    pad: i64,
    multimodal: bool,
    device: Device,
) -> SharedPromptBatch {
    let mut prompts: Vec<&Rc<PromptData>> = Vec::new();
    let mut group = Vec::with_capacity(rows.len());
    for r in rows {
        let g = match prompts.iter().position(|p| Rc::ptr_eq(p, &r.prompt)) {
            Some(g) => g,
            None => {
                prompts.push(&r.prompt);
                prompts.len() - 1
            }
        };
        group.push(g as i64);
    }
    let (g, b) = (prompts.len(), rows.len());
    let lp = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let lr = rows
        .iter()
        .map(|r| r.response.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = vec![pad; g * lp];
    let mut mask = vec![0i64; g * lp];
    let mut pos = vec![0i64; 3 * g * lp];
    for (i, p) in prompts.iter().enumerate() {
        let n = p.len();
        let off = lp - n;
        for j in 0..n {
            ids[i * lp + off + j] = p.ids[j];
            mask[i * lp + off + j] = 1;
            for d in 0..3 {
                pos[d * g * lp + i * lp + off + j] = p.positions[d * n + j];
            }
        }
    }
    let mut resp = vec![pad; b * lr];
    let mut rmask = vec![0f32; b * lr];
    for (i, r) in rows.iter().enumerate() {
        for (j, &t) in r.response.iter().enumerate() {
            resp[i * lr + j] = t;
            rmask[i * lr + j] = 1.0;
        }
    }
    let cat_opt = |f: &dyn Fn(&PromptData) -> Option<&Tensor>| {
        let parts: Vec<&Tensor> = prompts.iter().filter_map(|p| f(p)).collect();
        (!parts.is_empty()).then(|| Tensor::cat(&parts, 0).to_device(device))
    };
    let (gi, li, bi, lri) = (g as i64, lp as i64, b as i64, lr as i64);
    SharedPromptBatch {
        prompt_ids: Tensor::from_slice(&ids).view([gi, li]).to_device(device),
        prompt_mask: Tensor::from_slice(&mask).view([gi, li]).to_device(device),
        prompt_positions: multimodal
            .then(|| Tensor::from_slice(&pos).view([3, gi, li]).to_device(device)),
        pixel_values: cat_opt(&|p| p.pixel_values.as_ref()),
        image_grid_thw: cat_opt(&|p| p.image_grid_thw.as_ref()),
        group: Tensor::from_slice(&group).to_device(device),
        responses: Tensor::from_slice(&resp).view([bi, lri]).to_device(device),
        response_mask: Tensor::from_slice(&rmask).view([bi, lri]).to_device(device),
    }
}

#[cfg(test)]
mod tests {
    use lmmhost_model::processor::{Message, Part};

    use super::*;

    fn user(text: &str) -> Conversation {
        vec![Message {
            role: "user".into(),
            parts: vec![Part::Text(text.into())],
        }]
    }

    /// Over-long prompts are dropped, the kept indices name the survivors,
    /// and the batch is the one the survivors alone prepare.
    #[test]
    fn prepare_prompts_drops_long_prompts_and_batches_the_rest() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/char-qwen2");
        let processor = Processor::from_dir(dir).unwrap();
        let convs = vec![user("1+2"), user(&"9".repeat(200)), user("3*4"), user("7")];
        let lens = processor.prepare(&convs, true).unwrap().seq_lens;
        let names: Vec<String> = (0..convs.len()).map(|i| format!("sample {i}")).collect();
        let limit = lens[0].max(lens[2]).max(lens[3]);
        assert!(lens[1] > limit);

        let prepared = prepare_prompts(&processor, &convs, &names, limit).unwrap();
        let (batch, kept) = (prepared.batch, prepared.kept);
        assert_eq!(kept, vec![0, 2, 3]);
        assert_eq!(prepared.too_long, vec![(1, lens[1])]);
        let want = processor
            .prepare(
                &[convs[0].clone(), convs[2].clone(), convs[3].clone()],
                true,
            )
            .unwrap();
        let batch = batch.unwrap();
        assert!(batch.input_ids.equal(&want.input_ids));
        assert!(batch.attention_mask.equal(&want.attention_mask));
        assert_eq!(batch.seq_lens, want.seq_lens);

        let all = prepare_prompts(&processor, &convs, &names, lens[1]).unwrap();
        assert_eq!(all.kept, vec![0, 1, 2, 3]);
        assert_eq!(all.batch.unwrap().seq_lens, lens);

        let none = prepare_prompts(&processor, &convs, &names, 1).unwrap();
        assert!(none.batch.is_none() && none.kept.is_empty());
        assert_eq!(none.too_long.len(), 4);
    }
}
