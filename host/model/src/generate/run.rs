//! [`generate`]: checks the settings, splits the prompts over CPU workers,
//! runs an engine for each share and assembles the completions.

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::config::{
    Completion, EngineStats, FinishReason, GenerateConfig, Generation, PromptBatch, TokenDecoder,
};
use super::engine::{run_engine, EngineSettings, RowOutput};
use super::prompts::PromptSet;
use crate::lm::CausalLm;
use crate::parallel::{map_jobs, ReadOnlyShared};
use crate::sampling::SeededRng;

/// Generates `samples_per_prompt` completions of every prompt in `prompts`
/// (a left-padded batch, see [`PromptBatch`]; `&ForwardInputs` converts).
/// Takes one number from `rng` as the seed of every row's random stream
/// (save `rng` afterwards to resume with the same streams).
pub fn generate<'a>(
    model: &dyn CausalLm,
    prompts: impl Into<PromptBatch<'a>>,
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
    let batch = prompts.into();
    let device = batch.inputs.input_ids.device();
    let set = PromptSet::new(batch, model.image_tokens())?;
    let n = cfg.samples_per_prompt;
    let seed = rng.next_u64();
    let mut stop_ids: Vec<i64> = model.eos_token_ids().to_vec();
    for &id in &cfg.stop_token_ids {
        if !stop_ids.contains(&id) {
            stop_ids.push(id);
        }
    }
    let rows = set.len() * n;
    if cfg.max_new_tokens == 0 || set.is_empty() {
        return assemble(
            Vec::new(),
            set.len(),
            cfg,
            &stop_ids,
            decoder,
            EngineStats::default(),
        );
    }

    // Workers take contiguous shares of the prompts (a prompt's rows stay together).
    let mut workers = if device == Device::Cpu {
        cfg.workers.clamp(1, set.len())
    } else {
        1
    };
    // Each worker's share of the budget must hold one prompt and one row.
    if let Some(budget) = cfg.kv_cache_tokens {
        let least = set.lens.iter().copied().max().unwrap_or(1).max(1)
            + cfg.max_new_tokens.saturating_sub(1).max(1);
        workers = workers.min(budget / least).max(1);
    }
    let share = set.len().div_ceil(workers);
    let shares: Vec<Vec<usize>> = (0..set.len())
        .collect::<Vec<_>>()
        .chunks(share)
        .map(<[usize]>::to_vec)
        .collect();
    let budget = cfg.kv_cache_tokens.map(|b| b / shares.len());
    let settings = EngineSettings {
        cfg,
        stop_ids: &stop_ids,
        device,
        seed,
        kv_cache_tokens: budget,
    };
    let parts = if shares.len() == 1 {
        vec![run_engine(model, &set, &shares[0], &settings)?]
    } else {
        // SAFETY: the workers run no_grad forward passes on the model and
        // read the prompt tensors; each writes only its own engine's tensors.
        let shared = unsafe { ReadOnlyShared::new((model, &set, &settings)) };
        map_jobs(shares, workers, |_, mine| {
            let &(model, set, settings) = shared.get();
            run_engine(model, set, &mine, settings)
        })?
    };
    let mut stats = EngineStats::default();
    let mut outputs = Vec::with_capacity(rows);
    for (out, s) in parts {
        outputs.extend(out);
        stats.kv_tokens += s.kv_tokens;
        stats.row_slots += s.row_slots;
        stats.prompt_slots += s.prompt_slots;
        stats.prefills += s.prefills;
        stats.decode_steps = stats.decode_steps.max(s.decode_steps);
        stats.idle_row_steps += s.idle_row_steps;
    }
    assemble(outputs, set.len(), cfg, &stop_ids, decoder, stats)
}

/// Completions in prompt-major order and the padded token/log-prob tables.
fn assemble(
    mut outputs: Vec<RowOutput>,
    prompts: usize,
    cfg: &GenerateConfig,
    stop_ids: &[i64],
    decoder: Option<&dyn TokenDecoder>,
    stats: EngineStats,
) -> Result<Generation> {
    let n = cfg.samples_per_prompt;
    let rows = prompts * n;
    outputs.sort_by_key(|o| (o.prompt, o.sample));
    if cfg.max_new_tokens == 0 {
        outputs = (0..rows)
            .map(|r| RowOutput {
                prompt: r / n,
                sample: r % n,
                tokens: Vec::new(),
                logprobs: Vec::new(),
            })
            .collect();
    }
    if outputs.len() != rows {
        bail!(
            "generation produced {} completions for {rows} rows",
            outputs.len()
        );
    }
    let steps = outputs.iter().map(|o| o.tokens.len()).max().unwrap_or(0);
    let mut tok = vec![cfg.pad_token_id; rows * steps];
    let mut lp = vec![0f32; rows * steps];
    let mut completions = Vec::with_capacity(rows);
    for (r, o) in outputs.into_iter().enumerate() {
        tok[r * steps..r * steps + o.tokens.len()].copy_from_slice(&o.tokens);
        lp[r * steps..r * steps + o.logprobs.len()].copy_from_slice(&o.logprobs);
        let finish = match o.tokens.last() {
            Some(&t) if stop_ids.contains(&t) => FinishReason::Stop(t),
            _ => FinishReason::Length,
        };
        let text = match decoder {
            Some(d) => d
                .decode(&o.tokens)
                .with_context(|| format!("decoding completion {r}"))?,
            None => String::new(),
        };
        completions.push(Completion {
            prompt_index: o.prompt,
            sample_index: o.sample,
            token_ids: o.tokens,
            logprobs: o.logprobs,
            text,
            finish,
        });
    }
    let shape = [rows as i64, steps as i64];
    Ok(Generation {
        completions,
        tokens: Tensor::from_slice(&tok).view(shape),
        logprobs: Tensor::from_slice(&lp).view(shape).to_kind(Kind::Float),
        steps,
        stats,
    })
}
