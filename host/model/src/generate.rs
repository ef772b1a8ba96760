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

use crate::lm::{CausalLm, ForwardInputs, KvCache};
use crate::parallel::{map_jobs, Shared};
use crate::sampling::{check_ids_in_vocab, choose, id_tensor, SamplingParams, SeededRng, Uniforms};

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
        // Row chunks decoded at once on `workers` threads. Row r at step s
        // gets uniform number s * rows + r of `rng`, as in one sequential
        // run, so the samples do not depend on the worker count.
        let sampled = !cfg.sampling.is_greedy();
        let table: Vec<f64> = if sampled {
            let mut ahead = rng.clone();
            (0..steps_max * rows).map(|_| ahead.next_f64()).collect()
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
        let shared = Shared((model, &ctx, &table));
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
            // Leave `rng` where one sequential run would have.
            for _ in 0..steps * rows {
                rng.next_f64();
            }
        }
        let (tokens, lps): (Vec<Tensor>, Vec<Tensor>) =
            parts.into_iter().map(|(t, l, _)| (t, l)).unzip();
        (Tensor::cat(&tokens, 0), Tensor::cat(&lps, 0), steps)
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

/// What the decode loop needs besides the model, cache and uniforms.
struct DecodeSettings<'a> {
    cfg: &'a GenerateConfig,
    stop_ids: &'a [i64],
    steps_max: i64,
    device: Device,
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
fn decode_rows(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose next-token logits are `table[token] + pos_bias[position]`
    /// for the last token and its rotary position: small enough to follow by
    /// hand, and it reads positions and tokens from the cache like a real model.
    struct TableLm {
        table: Vec<Vec<f32>>,
        pos_bias: Vec<Vec<f32>>,
        eos: Vec<i64>,
    }

    impl TableLm {
        fn v(&self) -> usize {
            self.table.len()
        }
        fn row(&self, tok: i64, pos: i64) -> Vec<f32> {
            let p = (pos as usize).min(self.pos_bias.len() - 1);
            (0..self.v())
                .map(|j| self.table[tok as usize][j] + self.pos_bias[p][j])
                .collect()
        }
        fn logits_for(&self, toks: &[i64], pos: &[i64]) -> Tensor {
            let flat: Vec<f32> = toks
                .iter()
                .zip(pos)
                .flat_map(|(&t, &p)| self.row(t, p))
                .collect();
            Tensor::from_slice(&flat).view([toks.len() as i64, self.v() as i64])
        }
        /// Five tokens, EOS = 0; the likeliest successor of t is t+1 (4 -> 1);
        /// EOS is suppressed before position 6 and wins from there on.
        fn cycle() -> Self {
            let v = 5;
            let mut table = vec![vec![0f32; v]; v];
            for (t, row) in table.iter_mut().enumerate() {
                let next = if t == 4 { 1 } else { t + 1 };
                row[next] = 3.0;
                row[(next % 4) + 1] = 1.5;
            }
            let pos_bias = (0..12).map(|p| {
                let mut r = vec![0f32; v];
                r[0] = if p >= 6 { 10.0 } else { -2.0 };
                r
            });
            TableLm {
                table,
                pos_bias: pos_bias.collect(),
                eos: vec![0],
            }
        }
    }

    impl CausalLm for TableLm {
        fn forward(&self, _inputs: &ForwardInputs) -> Result<Tensor> {
            bail!("not used by generation")
        }
        fn prefill(&self, inputs: &ForwardInputs) -> Result<(Tensor, KvCache)> {
            let ids = Vec::<Vec<i64>>::try_from(inputs.input_ids)?;
            let mask = Vec::<Vec<i64>>::try_from(inputs.attention_mask)?;
            let last: Vec<i64> = ids.iter().map(|r| r[r.len() - 1]).collect();
            let next: Vec<i64> = mask.iter().map(|m| m.iter().sum()).collect();
            let pos: Vec<i64> = next.iter().map(|n| n - 1).collect();
            let kv = inputs
                .input_ids
                .to_kind(Kind::Float)
                .unsqueeze(1)
                .unsqueeze(-1);
            let cache = KvCache {
                layers: vec![(kv.shallow_clone(), kv)],
                attention_mask: inputs.attention_mask.shallow_clone(),
                next_position: Tensor::from_slice(&next),
                buffers: Vec::new(),
            };
            Ok((self.logits_for(&last, &pos), cache))
        }
        fn decode_step(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
            let toks = Vec::<i64>::try_from(ids.squeeze_dim(1))?;
            let pos = Vec::<i64>::try_from(&cache.next_position)?;
            let kv = ids.to_kind(Kind::Float).unsqueeze(1).unsqueeze(-1);
            let (k, v) = &cache.layers[0];
            cache.layers[0] = (Tensor::cat(&[k, &kv], 2), Tensor::cat(&[v, &kv], 2));
            cache.attention_mask = Tensor::cat(&[&cache.attention_mask, &ids.ones_like()], 1);
            cache.next_position = &cache.next_position + 1;
            Ok(self.logits_for(&toks, &pos))
        }
        fn token_stats(
            &self,
            _inputs: &ForwardInputs,
            _targets: &Tensor,
            _entropy: crate::lm::Entropy,
        ) -> Result<(Tensor, Option<Tensor>)> {
            bail!("not used by generation")
        }
        fn eos_token_ids(&self) -> &[i64] {
            &self.eos
        }
    }

    /// Left-padded batch (pad id 0).
    fn batch(prompts: &[&[i64]]) -> (Tensor, Tensor) {
        let l = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for p in prompts {
            ids.extend(std::iter::repeat_n(0, l - p.len()).chain(p.iter().copied()));
            mask.extend(std::iter::repeat_n(0, l - p.len()).chain(std::iter::repeat_n(1, p.len())));
        }
        let shape = [prompts.len() as i64, l as i64];
        (
            Tensor::from_slice(&ids).view(shape),
            Tensor::from_slice(&mask).view(shape),
        )
    }

    fn text_inputs<'a>(ids: &'a Tensor, mask: &'a Tensor) -> ForwardInputs<'a> {
        ForwardInputs {
            input_ids: ids,
            attention_mask: mask,
            position_ids: None,
            pixel_values: None,
            image_grid_thw: None,
        }
    }

    fn run(m: &TableLm, prompts: &[&[i64]], cfg: &GenerateConfig, seed: u64) -> Generation {
        let (ids, mask) = batch(prompts);
        generate(
            m,
            &text_inputs(&ids, &mask),
            cfg,
            &mut SeededRng::new(seed),
            None,
        )
        .unwrap()
    }

    /// Plain-Rust reference: the same draws (one uniform per row and step, all
    /// rows, finished or not), softmax and inverse CDF on f64.
    fn reference(
        m: &TableLm,
        prompts: &[&[i64]],
        cfg: &GenerateConfig,
        seed: u64,
    ) -> Vec<(Vec<i64>, Vec<f64>)> {
        let n = cfg.samples_per_prompt;
        let mut rng = SeededRng::new(seed);
        let mut state: Vec<(i64, i64)> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n((p[p.len() - 1], p.len() as i64 - 1), n))
            .collect();
        let mut out: Vec<(Vec<i64>, Vec<f64>)> = vec![(vec![], vec![]); state.len()];
        let mut done = vec![false; state.len()];
        for step in 0..cfg.max_new_tokens {
            if done.iter().all(|&d| d) {
                break;
            }
            for (r, (tok, pos)) in state.iter_mut().enumerate() {
                let row: Vec<f64> = m.row(*tok, *pos).iter().map(|&x| f64::from(x)).collect();
                let mut z = row.clone();
                for &b in &cfg.blocked_token_ids {
                    z[b as usize] = f64::NEG_INFINITY;
                }
                if step < cfg.min_new_tokens {
                    for &e in &m.eos {
                        z[e as usize] = f64::NEG_INFINITY;
                    }
                }
                let t = if cfg.sampling.is_greedy() {
                    (0..z.len()).fold(0, |best, j| if z[j] > z[best] { j } else { best })
                } else {
                    let u = f64::from(rng.next_f64() as f32);
                    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = z.iter().map(|x| (x - mx).exp()).collect();
                    let s: f64 = e.iter().sum();
                    let mut c = 0.0;
                    let mut pick = e.len() - 1;
                    for (j, x) in e.iter().enumerate() {
                        c += x / s;
                        if c > u {
                            pick = j;
                            break;
                        }
                    }
                    pick
                };
                if !done[r] {
                    let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
                    out[r].0.push(t as i64);
                    out[r].1.push(row[t] - lse);
                    done[r] = m.eos.contains(&(t as i64));
                }
                *tok = t as i64;
                *pos += 1;
            }
        }
        out
    }

    fn assert_matches(g: &Generation, want: &[(Vec<i64>, Vec<f64>)]) {
        assert_eq!(g.completions.len(), want.len());
        for (c, (ids, lps)) in g.completions.iter().zip(want) {
            assert_eq!(
                &c.token_ids, ids,
                "row {} sample {}",
                c.prompt_index, c.sample_index
            );
            for (a, b) in c.logprobs.iter().zip(lps) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-5,
                    "{:?} vs {lps:?}",
                    c.logprobs
                );
            }
        }
    }

    #[test]
    fn greedy_left_padded_batch_finishes_per_sequence() {
        let m = TableLm::cycle();
        let cfg = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 10,
            pad_token_id: 0,
            ..Default::default()
        };
        let prompts: [&[i64]; 2] = [&[1, 2], &[3, 4, 1, 2, 3]];
        let g = run(&m, &prompts, &cfg, 0);
        // By hand: "2" sits at position 1 -> 3 (pos 2) -> 4 -> 1 -> 2 -> 3 (pos 6) -> EOS.
        assert_eq!(g.completions[0].token_ids, vec![3, 4, 1, 2, 3, 0]);
        assert_eq!(g.completions[0].finish, FinishReason::Stop(0));
        // "3" at position 4 -> 4 (pos 5) -> 1 (pos 6) -> EOS.
        assert_eq!(g.completions[1].token_ids, vec![4, 1, 0]);
        assert_eq!(g.steps, 6);
        // The finished row is padded and its log-probs are zero.
        let row1 = Vec::<i64>::try_from(g.tokens.get(1)).unwrap();
        assert_eq!(row1, vec![4, 1, 0, 0, 0, 0]);
        let lp1 = Vec::<f32>::try_from(g.logprobs.get(1)).unwrap();
        assert_eq!(&lp1[3..], &[0.0, 0.0, 0.0]);
        assert_matches(&g, &reference(&m, &prompts, &cfg, 0));
    }

    #[test]
    fn max_new_tokens_and_min_new_tokens() {
        let m = TableLm::cycle();
        let prompts: [&[i64]; 1] = [&[3, 4, 1, 2, 3]];
        let cfg = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 2,
            ..Default::default()
        };
        let g = run(&m, &prompts, &cfg, 0);
        assert_eq!(g.completions[0].token_ids, vec![4, 1]);
        assert_eq!(g.completions[0].finish, FinishReason::Length);
        // min_new_tokens 5 keeps EOS away for five tokens; it comes sixth.
        let cfg = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 8,
            min_new_tokens: 5,
            ..Default::default()
        };
        let g = run(&m, &prompts, &cfg, 0);
        assert_eq!(g.completions[0].token_ids, vec![4, 1, 2, 3, 4, 0]);
        assert_matches(&g, &reference(&m, &prompts, &cfg, 0));
        // Blocking EOS fixes the length at max_new_tokens; blocking 2 reroutes to the runner-up.
        let cfg = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 4,
            blocked_token_ids: vec![0, 2],
            ..Default::default()
        };
        let g = run(&m, &prompts, &cfg, 0);
        assert_eq!(g.completions[0].token_ids, vec![4, 1, 3, 4]);
        assert_eq!(g.completions[0].finish, FinishReason::Length);
        // An extra stop id ends a sequence like EOS.
        let cfg = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 8,
            stop_token_ids: vec![1],
            ..Default::default()
        };
        let g = run(&m, &prompts, &cfg, 0);
        assert_eq!(g.completions[0].token_ids, vec![4, 1]);
        assert_eq!(g.completions[0].finish, FinishReason::Stop(1));
    }

    #[test]
    fn greedy_groups_repeat_the_single_sample() {
        let m = TableLm::cycle();
        let prompts: [&[i64]; 3] = [&[1, 2], &[3, 4, 1, 2, 3], &[4]];
        let one = run(
            &m,
            &prompts,
            &GenerateConfig {
                sampling: SamplingParams::greedy(),
                max_new_tokens: 9,
                ..Default::default()
            },
            0,
        );
        let cfg = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 9,
            samples_per_prompt: 4,
            ..Default::default()
        };
        let g = run(&m, &prompts, &cfg, 0);
        assert_eq!(g.completions.len(), 12);
        for (r, c) in g.completions.iter().enumerate() {
            assert_eq!((c.prompt_index, c.sample_index), (r / 4, r % 4));
            assert_eq!(c.token_ids, one.completions[r / 4].token_ids);
            assert_eq!(c.logprobs, one.completions[r / 4].logprobs);
        }
    }

    #[test]
    fn group_sampling_matches_a_plain_reference_and_is_seeded() {
        // A flatter table so that samples differ.
        let mut m = TableLm::cycle();
        for row in &mut m.table {
            for x in row.iter_mut() {
                *x *= 0.3;
            }
        }
        for row in &mut m.pos_bias {
            row[0] = if row[0] > 0.0 { 1.0 } else { -1.0 };
        }
        let prompts: [&[i64]; 2] = [&[1, 2, 3], &[4]];
        let cfg = GenerateConfig {
            max_new_tokens: 12,
            samples_per_prompt: 5,
            ..Default::default()
        };
        let g = run(&m, &prompts, &cfg, 123);
        assert_matches(&g, &reference(&m, &prompts, &cfg, 123));
        let distinct: std::collections::HashSet<_> =
            g.completions.iter().map(|c| c.token_ids.clone()).collect();
        assert!(
            distinct.len() > 3,
            "samples of a group should differ: {distinct:?}"
        );
        let again = run(&m, &prompts, &cfg, 123);
        for (a, b) in g.completions.iter().zip(&again.completions) {
            assert_eq!(a.token_ids, b.token_ids);
        }
        // With top-k 1 sampling is greedy, whatever the seed.
        let cfg_k1 = GenerateConfig {
            sampling: SamplingParams {
                top_k: Some(1),
                ..Default::default()
            },
            ..cfg.clone()
        };
        let greedy = GenerateConfig {
            sampling: SamplingParams::greedy(),
            ..cfg.clone()
        };
        let a = run(&m, &prompts, &cfg_k1, 5);
        let b = run(&m, &prompts, &greedy, 0);
        for (x, y) in a.completions.iter().zip(&b.completions) {
            assert_eq!(x.token_ids, y.token_ids);
        }
    }

    #[test]
    fn workers_decode_the_same_samples_and_leave_the_rng_where_one_run_does() {
        let mut m = TableLm::cycle();
        for row in &mut m.table {
            for x in row.iter_mut() {
                *x *= 0.3;
            }
        }
        let prompts: [&[i64]; 3] = [&[1, 2, 3], &[4], &[2, 2]];
        let (ids, mask) = batch(&prompts);
        let inputs = text_inputs(&ids, &mask);
        for sampling in [SamplingParams::default(), SamplingParams::greedy()] {
            let cfg = GenerateConfig {
                sampling,
                max_new_tokens: 12,
                samples_per_prompt: 3,
                ..Default::default()
            };
            let mut rng1 = SeededRng::new(9);
            let one = generate(&m, &inputs, &cfg, &mut rng1, None).unwrap();
            assert_matches(&one, &reference(&m, &prompts, &cfg, 9));
            // 9 rows: chunks of 5+4, 3x3, 3+3+3 and 9 single rows, each
            // stopping at its own step.
            for workers in [2, 3, 4, 9, 20] {
                let mut rng = SeededRng::new(9);
                let cfg_w = GenerateConfig {
                    workers,
                    ..cfg.clone()
                };
                let g = generate(&m, &inputs, &cfg_w, &mut rng, None).unwrap();
                assert_matches(&g, &reference(&m, &prompts, &cfg, 9));
                assert_eq!(g.steps, one.steps, "{workers} workers");
                assert!(g.tokens.equal(&one.tokens), "{workers} workers");
                assert_eq!(rng.state(), rng1.state(), "{workers} workers");
            }
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let m = TableLm::cycle();
        let (ids, mask) = batch(&[&[1, 2]]);
        let inputs = ForwardInputs {
            input_ids: &ids,
            attention_mask: &mask,
            position_ids: None,
            pixel_values: None,
            image_grid_thw: None,
        };
        let mut rng = SeededRng::new(0);
        let cfg = GenerateConfig {
            stop_token_ids: vec![9],
            ..Default::default()
        };
        let err = generate(&m, &inputs, &cfg, &mut rng, None).err().unwrap();
        assert!(
            format!("{err:#}").contains("token id 9 is outside the vocabulary"),
            "{err:#}"
        );
        let cfg = GenerateConfig {
            min_new_tokens: 5,
            max_new_tokens: 2,
            ..Default::default()
        };
        assert!(generate(&m, &inputs, &cfg, &mut rng, None).is_err());
        let cfg = GenerateConfig {
            samples_per_prompt: 0,
            ..Default::default()
        };
        assert!(generate(&m, &inputs, &cfg, &mut rng, None).is_err());
    }
}
