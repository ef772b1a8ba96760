//! Choosing the next token from logits: greedy, temperature, top-k, top-p,
//! blocked tokens, with a seeded random generator whose state can be saved and
//! restored (a resumed training run must draw the same rollouts).
//!
//! Random draws come from our own xoshiro256++ generator on the host, one
//! uniform number per row and step, turned into a token by inverse-CDF on the
//! device. That keeps results identical for a given seed regardless of how
//! libtorch's generators are seeded or shared with other code, and the whole
//! state is four integers.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How the next token is chosen. Options that are not set do nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Always take the most likely (non-blocked) token. `temperature == 0` means the same.
    #[serde(default)]
    pub greedy: bool,
    /// Logits are divided by this before top-k/top-p and sampling.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Keep only the k most likely tokens (ties with the k-th are kept too). `None` or 0: off.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Keep the smallest set of most likely tokens whose probability reaches p
    /// (at least one token). `None` or >= 1: off.
    #[serde(default)]
    pub top_p: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            greedy: false,
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            greedy: true,
            ..Default::default()
        }
    }

    /// True when the choice is an argmax (no random draw).
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.temperature == 0.0
    }

    /// The temperature the returned log-probs are computed at: 1 for greedy.
    pub fn logprob_temperature(&self) -> f64 {
        if self.is_greedy() {
            1.0
        } else {
            self.temperature
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!(
                "sampling temperature must be a finite number >= 0, got {}",
                self.temperature
            );
        }
        if let Some(k) = self.top_k {
            if k < 0 {
                bail!("top_k must be >= 0 (0 = off), got {k}");
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p.is_finite()) {
                bail!("top_p must be in (0, 1] (1 = off), got {p}");
            }
        }
        Ok(())
    }
}

/// xoshiro256++ (Blackman & Vigna), seeded through splitmix64. Small, fast,
/// and its state is all there is to save for an exact resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededRng {
    state: [u64; 4],
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            let z = splitmix64(x);
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z
        };
        SeededRng {
            state: [next(), next(), next(), next()],
        }
    }

    /// The full state, to be stored in a checkpoint.
    pub fn state(&self) -> [u64; 4] {
        self.state
    }

    /// Restores a state returned by [`SeededRng::state`].
    pub fn from_state(state: [u64; 4]) -> Result<Self> {
        if state == [0; 4] {
            bail!("invalid random generator state: all zeros (xoshiro would only ever return 0)");
        }
        Ok(SeededRng { state })
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// An independent stream for `keys` under `seed` (e.g. one per
    /// generated row: its prompt and sample index), so that what a row draws
    /// does not depend on what else is generated with it.
    pub fn keyed(seed: u64, keys: &[u64]) -> Self {
        let mut x = seed;
        for &k in keys {
            x = splitmix64(x ^ splitmix64(k.wrapping_add(0x6A09_E667_F3BC_C909)));
        }
        SeededRng::new(x)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One round of splitmix64 (Steele, Lea & Flood): a bijective mix of 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where sampling gets its uniforms: a [`SeededRng`], or numbers drawn from
/// one ahead of time (parallel generation, so that every row gets the number
/// it would get in one sequential run).
pub trait Uniforms {
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64;
}

impl Uniforms for SeededRng {
    fn next_f64(&mut self) -> f64 {
        SeededRng::next_f64(self)
    }
}

/// The chosen tokens of one step.
pub struct Choice {
    /// `[B]` int64.
    pub tokens: Tensor,
    /// `[B]` float32: log-probability of each chosen token under
    /// `log_softmax(logits / T)` of the *unfiltered* logits (no top-k/top-p,
    /// no blocking), T = the sampling temperature, or 1 for greedy. This is the
    /// policy's own distribution at that temperature, which is what GRPO's
    /// "old" log-probs need when the trainer also divides by T.
    pub logprobs: Tensor,
}

/// Picks one token per row of `logits` `[B, V]`. `blocked`: int64 token ids
/// that can never be chosen (e.g. EOS before `min_new_tokens`). Draws exactly
/// B uniforms from `rng` per call unless the choice is greedy (then none).
pub fn choose(
    logits: &Tensor,
    params: &SamplingParams,
    blocked: Option<&Tensor>,
    rng: &mut dyn Uniforms,
) -> Result<Choice> {
    choose_rows(logits, params, blocked, None, rng)
}

/// [`choose`] with `early` = (ids, rows): tokens `ids` are also blocked for
/// the rows where the bool `rows` `[B]` is set (stop tokens before a row's
/// `min_new_tokens`).
pub fn choose_rows(
    logits: &Tensor,
    params: &SamplingParams,
    blocked: Option<&Tensor>,
    early: Option<(&Tensor, &Tensor)>,
    rng: &mut dyn Uniforms,
) -> Result<Choice> {
    if logits.dim() != 2 {
        bail!("choose expects logits [B, V], got {:?}", logits.size());
    }
    let (b, v) = (logits.size()[0], logits.size()[1]);
    let t = params.logprob_temperature();
    let scaled = if t == 1.0 {
        logits.to_kind(Kind::Float)
    } else {
        logits.to_kind(Kind::Float) / t
    };
    let mut z = match blocked {
        Some(ids) if ids.numel() > 0 => scaled.index_fill(1, ids, f64::NEG_INFINITY),
        _ => scaled.shallow_clone(),
    };
    if let Some((ids, rows)) = early.filter(|(ids, _)| ids.numel() > 0) {
        let z_early = z.index_fill(1, ids, f64::NEG_INFINITY);
        z = z_early.where_self(&rows.unsqueeze(1), &z);
    }
    let tokens = if params.is_greedy() {
        z.argmax(-1, false)
    } else {
        if let Some(k) = params.top_k.filter(|&k| k > 0 && k < v) {
            let kth = z.topk(k, -1, true, true).0.narrow(1, k - 1, 1);
            z = z.masked_fill(&z.lt_tensor(&kth), f64::NEG_INFINITY);
        }
        if let Some(p) = params.top_p.filter(|&p| p < 1.0) {
            let (sorted, idx) = z.sort(-1, true);
            let probs = sorted.softmax(-1, Kind::Float);
            // Mass of the strictly more likely tokens: a token is kept while
            // that is still below p, so the first one is always kept.
            let before = probs.cumsum(-1, Kind::Float) - &probs;
            let drop_sorted = before.ge(p);
            let drop = drop_sorted.zeros_like().scatter(1, &idx, &drop_sorted);
            z = z.masked_fill(&drop, f64::NEG_INFINITY);
        }
        let probs = z.softmax(-1, Kind::Float);
        let uniforms: Vec<f32> = (0..b).map(|_| rng.next_f64() as f32).collect();
        let u = Tensor::from_slice(&uniforms)
            .to_device(logits.device())
            .unsqueeze(1);
        inverse_cdf(&probs, &u)
    };
    let logprobs = scaled
        .log_softmax(-1, Kind::Float)
        .gather(1, &tokens.unsqueeze(1), false)
        .squeeze_dim(1);
    Ok(Choice { tokens, logprobs })
}

/// The first index whose cumulative probability exceeds `u * total` for each row;
/// never a zero-probability token (rounding at the top end is clamped to the
/// last token with mass).
fn inverse_cdf(probs: &Tensor, u: &Tensor) -> Tensor {
    let v = probs.size()[1];
    let cdf = probs.cumsum(-1, Kind::Float);
    let target = u * cdf.narrow(1, v - 1, 1);
    let idx = cdf
        .le_tensor(&target)
        .sum_dim_intlist([1].as_slice(), false, Kind::Int64);
    let ar = Tensor::arange(v, (Kind::Int64, probs.device()));
    let last_nonzero = (probs.gt(0.0).to_kind(Kind::Int64) * ar).amax([1].as_slice(), false);
    idx.minimum(&last_nonzero)
}

/// int64 tensor of token ids on `device`, for [`choose`]'s `blocked` argument.
pub fn id_tensor(ids: &[i64], device: tch::Device) -> Tensor {
    Tensor::from_slice(ids).to_device(device)
}

/// Checks that no id is outside the vocabulary (an out-of-range id would make
/// `index_fill` fail deep inside libtorch with a less helpful message).
pub fn check_ids_in_vocab(ids: &[i64], vocab: i64, what: &str) -> Result<()> {
    for &id in ids {
        if id < 0 || id >= vocab {
            return Err(anyhow::anyhow!(
                "{what}: token id {id} is outside the vocabulary (0..{vocab})"
            ))
            .context("check the stop/blocked token ids of the generation settings");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[&[f32]]) -> Tensor {
        let v = rows[0].len() as i64;
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, v])
    }

    fn ids(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t).unwrap()
    }

    fn ln(ps: &[f64]) -> Vec<f32> {
        ps.iter().map(|p| p.ln() as f32).collect()
    }

    /// Token frequencies from `n` draws on one distribution (rows drawn at once).
    fn frequencies(row: &[f32], params: &SamplingParams, n: i64, seed: u64) -> Vec<f64> {
        let v = row.len() as i64;
        let l = Tensor::from_slice(row).view([1, v]).repeat([n, 1]);
        let mut rng = SeededRng::new(seed);
        let c = choose(&l, params, None, &mut rng).unwrap();
        let mut counts = vec![0f64; v as usize];
        for t in ids(&c.tokens) {
            counts[t as usize] += 1.0;
        }
        counts.iter().map(|c| c / n as f64).collect()
    }

    #[test]
    fn greedy_is_argmax_and_skips_blocked() {
        let l = logits(&[&[0.1, 2.0, 1.5, -1.0], &[3.0, 0.0, 0.0, 0.5]]);
        let mut rng = SeededRng::new(1);
        let before = rng.clone();
        let c = choose(&l, &SamplingParams::greedy(), None, &mut rng).unwrap();
        assert_eq!(ids(&c.tokens), vec![1, 0]);
        assert_eq!(rng, before, "greedy must not consume random numbers");
        // Log-prob at T=1 of the argmax, computed by hand.
        let lp = Vec::<f32>::try_from(&c.logprobs).unwrap();
        let row0 = [0.1f64, 2.0, 1.5, -1.0];
        let lse = row0.iter().map(|x| x.exp()).sum::<f64>().ln();
        assert!((lp[0] as f64 - (2.0 - lse)).abs() < 1e-5, "{lp:?}");
        let blocked = id_tensor(&[1, 0], tch::Device::Cpu);
        let c = choose(&l, &SamplingParams::greedy(), Some(&blocked), &mut rng).unwrap();
        assert_eq!(ids(&c.tokens), vec![2, 3]);
        // temperature 0 means greedy as well
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(
            ids(&choose(&l, &p, None, &mut rng).unwrap().tokens),
            vec![1, 0]
        );
    }

    #[test]
    fn top_k_one_equals_greedy() {
        let l = crate::checkpoint::seeded(0, || {
            Tensor::randn([64, 50], (Kind::Float, tch::Device::Cpu))
        });
        let mut rng = SeededRng::new(7);
        let p = SamplingParams {
            top_k: Some(1),
            temperature: 1.3,
            ..Default::default()
        };
        let c = choose(&l, &p, None, &mut rng).unwrap();
        assert_eq!(ids(&c.tokens), ids(&l.argmax(-1, false)));
    }

    #[test]
    fn top_k_keeps_exactly_k_tokens() {
        // p = [0.4, 0.3, 0.2, 0.1]; top-2 renormalises to [4/7, 3/7, 0, 0].
        let row = ln(&[0.4, 0.3, 0.2, 0.1]);
        let p = SamplingParams {
            top_k: Some(2),
            ..Default::default()
        };
        let f = frequencies(&row, &p, 20000, 3);
        assert_eq!(f[2] + f[3], 0.0, "{f:?}");
        assert!((f[0] - 4.0 / 7.0).abs() < 0.02, "{f:?}");
    }

    #[test]
    fn top_p_keeps_exactly_the_nucleus() {
        // Sorted p = [0.5, 0.25, 0.15, 0.1]. top_p 0.7: 0.5 < 0.7, 0.75 >= 0.7 -> {0, 1}.
        let row = ln(&[0.15, 0.5, 0.1, 0.25]);
        let p = SamplingParams {
            top_p: Some(0.7),
            ..Default::default()
        };
        let f = frequencies(&row, &p, 20000, 11);
        assert_eq!(f[0] + f[2], 0.0, "{f:?}");
        assert!((f[1] - 2.0 / 3.0).abs() < 0.02, "{f:?}");
        assert!((f[3] - 1.0 / 3.0).abs() < 0.02, "{f:?}");
        // top_p 0.8: {0.5, 0.25, 0.15} (mass before 0.15 is 0.75 < 0.8).
        let p = SamplingParams {
            top_p: Some(0.8),
            ..Default::default()
        };
        let f = frequencies(&row, &p, 20000, 12);
        assert_eq!(f[2], 0.0, "{f:?}");
        assert!((f[0] - 0.15 / 0.9).abs() < 0.02, "{f:?}");
        // A tiny top_p keeps the single most likely token.
        let p = SamplingParams {
            top_p: Some(0.01),
            ..Default::default()
        };
        let f = frequencies(&row, &p, 1000, 13);
        assert_eq!(f[1], 1.0, "{f:?}");
    }

    #[test]
    fn sampling_frequencies_match_the_distribution() {
        let probs = [0.05, 0.6, 0.1, 0.25];
        let f = frequencies(&ln(&probs), &SamplingParams::default(), 40000, 5);
        for (got, want) in f.iter().zip(probs) {
            // 40k draws: the standard error is < 0.0025; 0.015 is > 6 sigma.
            assert!((got - want).abs() < 0.015, "{f:?} vs {probs:?}");
        }
    }

    #[test]
    fn temperature_scales_logits() {
        // logits ln p / T at T = 0.5 squares the probabilities: [0.2, 0.8] -> [0.04, 0.64] / 0.68.
        let row = ln(&[0.2, 0.8]);
        let p = SamplingParams {
            temperature: 0.5,
            ..Default::default()
        };
        let f = frequencies(&row, &p, 40000, 9);
        assert!((f[0] - 0.04 / 0.68).abs() < 0.01, "{f:?}");
        // Log-probs are under softmax(logits / T).
        let l = logits(&[&row]);
        let mut rng = SeededRng::new(2);
        let c = choose(&l, &p, None, &mut rng).unwrap();
        let tok = ids(&c.tokens)[0] as usize;
        let want = [0.04f64 / 0.68, 0.64 / 0.68][tok].ln();
        let got = f64::from(Vec::<f32>::try_from(&c.logprobs).unwrap()[0]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn blocked_tokens_are_never_sampled() {
        let row = ln(&[0.9, 0.05, 0.05]);
        let l = Tensor::from_slice(&row).view([1, 3]).repeat([5000, 1]);
        let mut rng = SeededRng::new(4);
        let blocked = id_tensor(&[0], tch::Device::Cpu);
        let c = choose(&l, &SamplingParams::default(), Some(&blocked), &mut rng).unwrap();
        let t = ids(&c.tokens);
        assert!(t.iter().all(|&x| x == 1 || x == 2));
        let ones = t.iter().filter(|&&x| x == 1).count() as f64 / 5000.0;
        assert!((ones - 0.5).abs() < 0.05, "{ones}");
    }

    #[test]
    fn seeded_draws_reproduce_and_resume() {
        let l = crate::checkpoint::seeded(0, || {
            Tensor::randn([8, 30], (Kind::Float, tch::Device::Cpu))
        });
        let p = SamplingParams {
            top_p: Some(0.9),
            top_k: Some(20),
            temperature: 0.8,
            greedy: false,
        };
        let run = |rng: &mut SeededRng| {
            (0..5)
                .map(|_| ids(&choose(&l, &p, None, rng).unwrap().tokens))
                .collect::<Vec<_>>()
        };
        let a = run(&mut SeededRng::new(42));
        let b = run(&mut SeededRng::new(42));
        assert_eq!(a, b);
        assert_ne!(a, run(&mut SeededRng::new(43)));
        // Save the state after two steps, restore it, and get the same remaining steps.
        let mut rng = SeededRng::new(42);
        let _ = choose(&l, &p, None, &mut rng).unwrap();
        let _ = choose(&l, &p, None, &mut rng).unwrap();
        let saved = serde_json::to_string(&rng).unwrap();
        let mut restored: SeededRng = serde_json::from_str(&saved).unwrap();
        let rest = (0..3)
            .map(|_| ids(&choose(&l, &p, None, &mut restored).unwrap().tokens))
            .collect::<Vec<_>>();
        assert_eq!(rest, a[2..].to_vec());
        let again = SeededRng::from_state(rng.state()).unwrap();
        assert_eq!(again, rng);
        assert!(SeededRng::from_state([0; 4]).is_err());
    }

    #[test]
    fn uniforms_are_in_range_and_spread() {
        let mut rng = SeededRng::new(0);
        let xs: Vec<f64> = (0..10000).map(|_| rng.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn inverse_cdf_never_picks_zero_mass() {
        let probs = Tensor::from_slice(&[0.0f32, 0.5, 0.5, 0.0, 0.0, 0.0, 0.5, 0.5]).view([2, 4]);
        let u = Tensor::from_slice(&[0.0f32, 0.999_999_9]).view([2, 1]);
        assert_eq!(ids(&inverse_cdf(&probs, &u)), vec![1, 3]);
        let u = Tensor::from_slice(&[0.999_999_9f32, 0.0]).view([2, 1]);
        assert_eq!(ids(&inverse_cdf(&probs, &u)), vec![2, 2]);
    }

    #[test]
    fn rejects_bad_params() {
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            top_p: Some(0.0),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            top_k: Some(-3),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams::default().validate().is_ok());
        assert!(check_ids_in_vocab(&[5], 4, "stop ids").is_err());
    }
}
