//! The decode loop: one token per row per step from the prefilled cache,
//! either over all rows at once or over row chunks on CPU worker threads.

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::GenerateConfig;
use crate::lm::{CausalLm, KvCache};
use crate::parallel::{map_jobs, ReadOnlyShared};
use crate::sampling::{choose, id_tensor, SeededRng, Uniforms};

/// What the decode loop needs besides the model, cache and uniforms.
pub(super) struct DecodeSettings<'a> {
    pub cfg: &'a GenerateConfig,
    pub stop_ids: &'a [i64],
    pub steps_max: i64,
    pub device: Device,
}

/// Uniforms drawn ahead of time for rows `first..first + len` of a batch of
/// `rows`: step s, row r reads `table[s * rows + r]`.
struct PreDrawn<'a> {
    table: &'a [f64],
    rows: usize,
    first: usize,
    len: usize,
    /// Uniforms handed out so far.
    next: usize,
}

impl Uniforms for PreDrawn<'_> {
    fn next_f64(&mut self) -> f64 {
        let (step, col) = (self.next / self.len, self.next % self.len);
        self.next += 1;
        self.table[step * self.rows + self.first + col]
    }
}

/// The decode loop over the rows of `logits` `[R, V]` (the prompts' last
/// logits) and their `cache`: one token per row per step until every row has
/// stopped or `steps_max` tokens exist. Returns tokens and log-probs `[R,
/// steps_max]` (pad and 0 after a row's end) and the steps run.
pub(super) fn decode_rows(
    model: &dyn CausalLm,
    mut logits: Tensor,
    mut cache: KvCache,
    ctx: &DecodeSettings,
    rng: &mut dyn Uniforms,
) -> Result<(Tensor, Tensor, i64)> {
    let (cfg, device, steps_max) = (ctx.cfg, ctx.device, ctx.steps_max);
    let rows = logits.size()[0];
    tch::no_grad(|| -> Result<(Tensor, Tensor, i64)> {
        // Room for every step's keys/values: no per-step copy of the whole cache.
        cache.reserve(steps_max - 1);
        let blocked_always =
            (!cfg.blocked_token_ids.is_empty()).then(|| id_tensor(&cfg.blocked_token_ids, device));
        let blocked_early = {
            let mut ids = cfg.blocked_token_ids.clone();
            ids.extend(
                ctx.stop_ids
                    .iter()
                    .copied()
                    .filter(|id| !cfg.blocked_token_ids.contains(id)),
            );
            (!ids.is_empty()).then(|| id_tensor(&ids, device))
        };
        let stop_t = id_tensor(ctx.stop_ids, device);
        let pad = Tensor::full([rows], cfg.pad_token_id, (Kind::Int64, device));
        let out_tokens = Tensor::full([rows, steps_max], cfg.pad_token_id, (Kind::Int64, device));
        let out_logprobs = Tensor::zeros([rows, steps_max], (Kind::Float, device));
        let mut finished = Tensor::zeros([rows], (Kind::Bool, device));
        let mut steps = 0i64;
        for step in 0..steps_max {
            let blocked = if (step as usize) < cfg.min_new_tokens {
                blocked_early.as_ref()
            } else {
                blocked_always.as_ref()
            };
            let choice = choose(&logits, &cfg.sampling, blocked, rng)?;
            let tokens = choice.tokens.where_self(&finished.logical_not(), &pad);
            let lps = choice.logprobs.masked_fill(&finished, 0.0);
            out_tokens.narrow(1, step, 1).copy_(&tokens.unsqueeze(1));
            out_logprobs.narrow(1, step, 1).copy_(&lps.unsqueeze(1));
            finished = finished.logical_or(&Tensor::isin(&tokens, &stop_t, false, false));
            steps = step + 1;
            // The one host sync per step: stop as soon as every row is done.
            if step + 1 == steps_max || finished.all().int64_value(&[]) != 0 {
                break;
            }
            logits = model
                .decode_step(&tokens.unsqueeze(1), &mut cache)
                .with_context(|| format!("decode step {}", step + 1))?;
        }
        Ok((out_tokens, out_logprobs, steps))
    })
}

/// [`decode_rows`] over row chunks on `workers` threads at once. Row r at
/// step s gets uniform number s * rows + r of `rng`, as in one sequential run,
/// so the samples do not depend on the worker count; `rng` is left where one
/// sequential run would have left it.
pub(super) fn decode_row_chunks(
    model: &dyn CausalLm,
    logits: Tensor,
    cache: KvCache,
    ctx: &DecodeSettings,
    rng: &mut SeededRng,
    workers: usize,
) -> Result<(Tensor, Tensor, i64)> {
    let rows = logits.size()[0];
    let sampled = !ctx.cfg.sampling.is_greedy();
    let table: Vec<f64> = if sampled {
        let mut ahead = rng.clone();
        (0..ctx.steps_max * rows)
            .map(|_| ahead.next_f64())
            .collect()
    } else {
        Vec::new()
    };
    let chunk = (rows + workers as i64 - 1) / workers as i64;
    let jobs: Vec<_> = (0..rows)
        .step_by(chunk as usize)
        .map(|r0| {
            let len = chunk.min(rows - r0);
            (r0, logits.narrow(0, r0, len), cache.rows(r0, len))
        })
        .collect();
    // SAFETY: the workers run decode steps (no_grad forward passes) on the
    // model and write only their own rows' caches and output tensors.
    let shared = unsafe { ReadOnlyShared::new((model, ctx, &table)) };
    let parts = map_jobs(jobs, workers, |_, (r0, logits, cache)| {
        let &(model, ctx, table) = shared.get();
        let mut uniforms = PreDrawn {
            table,
            rows: rows as usize,
            first: r0 as usize,
            len: logits.size()[0] as usize,
            next: 0,
        };
        decode_rows(model, logits, cache, ctx, &mut uniforms)
    })?;
    let steps = parts.iter().map(|p| p.2).max().unwrap_or(0);
    if sampled {
        for _ in 0..steps * rows {
            rng.next_f64();
        }
    }
    let (tokens, lps): (Vec<Tensor>, Vec<Tensor>) =
        parts.into_iter().map(|(t, l, _)| (t, l)).unzip();
    Ok((Tensor::cat(&tokens, 0), Tensor::cat(&lps, 0), steps))
}
