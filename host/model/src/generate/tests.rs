//! Generation against a table model small enough to follow by hand, and a
//! plain-Rust reference of the same draws.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::*;
use crate::lm::{CausalLm, ForwardInputs, KvCache};
use crate::sampling::{SamplingParams, SeededRng};

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
    fn decode_with(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention: &mut dyn crate::lm::DecodeAttention,
    ) -> Result<Tensor> {
        let toks = Vec::<i64>::try_from(ids.squeeze_dim(1))?;
        let pos = Vec::<i64>::try_from(positions)?;
        // Hands its keys/values to the engine as a one-layer model would.
        let kv = ids.to_kind(Kind::Float).view([toks.len() as i64, 1, 1, 1]);
        let _ = attention.attend(0, &kv.zeros_like(), &kv, &kv);
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

/// Plain-Rust reference: one row after the other, each drawing one uniform
/// per sampled token from its own stream (keyed by the generation's seed,
/// its prompt and its sample index); softmax and inverse CDF on f64.
fn reference(
    m: &TableLm,
    prompts: &[&[i64]],
    cfg: &GenerateConfig,
    seed: u64,
) -> Vec<(Vec<i64>, Vec<f64>)> {
    reference_keyed(
        m,
        prompts,
        &(0..prompts.len() as u64).collect::<Vec<_>>(),
        cfg,
        seed,
    )
}

fn reference_keyed(
    m: &TableLm,
    prompts: &[&[i64]],
    keys: &[u64],
    cfg: &GenerateConfig,
    seed: u64,
) -> Vec<(Vec<i64>, Vec<f64>)> {
    let n = cfg.samples_per_prompt;
    let seed = SeededRng::new(seed).next_u64();
    let mut out = Vec::new();
    for (p, key) in prompts.iter().zip(keys) {
        for j in 0..n {
            let mut rng = SeededRng::keyed(seed, &[*key, j as u64]);
            let (mut tok, mut pos) = (p[p.len() - 1], p.len() as i64 - 1);
            let (mut ids, mut lps) = (Vec::new(), Vec::new());
            for step in 0..cfg.max_new_tokens {
                let row: Vec<f64> = m.row(tok, pos).iter().map(|&x| f64::from(x)).collect();
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
                let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
                ids.push(t as i64);
                lps.push(row[t] - lse);
                if m.eos.contains(&(t as i64)) {
                    break;
                }
                tok = t as i64;
                pos += 1;
            }
            out.push((ids, lps));
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

fn flat_table() -> TableLm {
    let mut m = TableLm::cycle();
    for row in &mut m.table {
        for x in row.iter_mut() {
            *x *= 0.3;
        }
    }
    m
}

/// Any KV budget gives the same samples as all rows at once: from one
/// prompt and one row at a time up, with slots handed on as rows finish.
#[test]
fn budgets_give_the_same_samples_and_bound_the_cache() {
    let m = flat_table();
    let prompts: [&[i64]; 4] = [&[1, 2, 3], &[4], &[2, 2], &[3, 1, 4, 4]];
    let (ids, mask) = batch(&prompts);
    let inputs = text_inputs(&ids, &mask);
    let cfg = GenerateConfig {
        max_new_tokens: 12,
        samples_per_prompt: 3,
        min_new_tokens: 2,
        ..Default::default()
    };
    let want = reference(&m, &prompts, &cfg, 17);
    let all = generate(&m, &inputs, &cfg, &mut SeededRng::new(17), None).unwrap();
    assert_matches(&all, &want);
    assert_eq!((all.stats.row_slots, all.stats.prompt_slots), (12, 4));
    assert_eq!(all.stats.prefills, 1);
    // Longest prompt 4, rows of 11 own positions.
    for (budget, rows) in [(4 + 11, 1), (2 * 4 + 2 * 11, 2), (3 * 4 + 5 * 11, 5)] {
        for workers in [1, 2] {
            let cfg_b = GenerateConfig {
                kv_cache_tokens: Some(budget * workers),
                workers,
                ..cfg.clone()
            };
            let g = generate(&m, &inputs, &cfg_b, &mut SeededRng::new(17), None).unwrap();
            assert_matches(&g, &want);
            assert!(g.tokens.equal(&all.tokens), "budget {budget}");
            assert!(g.stats.kv_tokens <= budget * workers, "{:?}", g.stats);
            assert_eq!(g.stats.row_slots, rows * workers, "budget {budget}");
            // Prompts prefilled as slots free up, not all at once.
            assert!(g.stats.prefills > 1, "{:?}", g.stats);
        }
    }
    let too_small = GenerateConfig {
        kv_cache_tokens: Some(4 + 10),
        ..cfg.clone()
    };
    let err = generate(&m, &inputs, &too_small, &mut SeededRng::new(17), None)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("needs at least 15"), "{err:#}");
}

/// A prompt's samples depend on its key, not on where it sits in the batch
/// or what runs beside it.
#[test]
fn batch_order_does_not_change_a_prompts_samples() {
    let m = flat_table();
    let prompts: [&[i64]; 3] = [&[1, 2, 3], &[4], &[2, 2]];
    let cfg = GenerateConfig {
        max_new_tokens: 10,
        samples_per_prompt: 4,
        kv_cache_tokens: Some(3 + 2 * 9),
        ..Default::default()
    };
    let run_keyed = |order: &[usize]| {
        let ps: Vec<&[i64]> = order.iter().map(|&i| prompts[i]).collect();
        let keys: Vec<u64> = order.iter().map(|&i| i as u64).collect();
        let (ids, mask) = batch(&ps);
        let inputs = text_inputs(&ids, &mask);
        let pb = PromptBatch {
            inputs,
            images_per_prompt: None,
            keys: Some(&keys),
        };
        let g = generate(&m, pb, &cfg, &mut SeededRng::new(3), None).unwrap();
        assert_matches(&g, &reference_keyed(&m, &ps, &keys, &cfg, 3));
        let mut by_key: Vec<(u64, usize, Vec<i64>)> = g
            .completions
            .iter()
            .map(|c| (keys[c.prompt_index], c.sample_index, c.token_ids.clone()))
            .collect();
        by_key.sort();
        by_key
    };
    let a = run_keyed(&[0, 1, 2]);
    assert_eq!(a, run_keyed(&[2, 0, 1]));
    assert_eq!(&a[..4], &run_keyed(&[0])[..]);
}
