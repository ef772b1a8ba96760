//! The engine's keys/values: every resident prompt once, every live row's
//! own tokens apart, and the attention of one decode step over both.
//!
//! A row's attention runs in two parts combined by their log-sum-exps: over
//! its prompt's keys, with the queries of all the prompt's rows at once (the
//! group's n rows x the query heads of a KV head become n x groups queries
//! of that KV head, so the prompt's keys are read once per group, not once
//! per row), and over its own tokens. That is exact: softmax over the
//! concatenation of two key sets equals the two partial softmaxes weighted
//! by `exp(lse_part - lse_all)`.
//!
//! Scores are computed in the model's dtype, softmax and the combination in
//! float32 (as transformers' eager attention does for bf16).

use tch::{Device, Kind, Tensor};

use super::capacity::SlotPlan;
use crate::lm::{DecodeAttention, KvCache};

/// Pools allocated once per generation.
pub struct KvPools {
    /// Per layer, `[P, kvH, Lp, D]`: prompts right-aligned, left padding masked.
    prompt: Vec<(Tensor, Tensor)>,
    /// `[P, 1, 1, Lp]` bool, true where a slot holds no prompt token.
    prompt_pad: Tensor,
    /// Per layer, `[R, kvH, Lr, D]`: each row's own tokens from position 0.
    rows: Vec<(Tensor, Tensor)>,
    samples: i64,
}

/// Where the live rows of one decode step read and write.
pub struct StepIndex {
    /// Live prompt slots (0..prompts); the live row slots are q's rows.
    pub prompts: i64,
    /// Own keys every row attends over this step (the longest live row's).
    pub suffix_len: i64,
    /// `[rows * kvH]`: flat index into a layer's `[R * kvH * Lr, D]` row pool
    /// where each row's new key/value goes.
    pub write: Tensor,
    /// `[rows, 1, 1, suffix_len]` bool: own positions a row does not have yet.
    pub suffix_pad: Tensor,
    /// `[prompts * n]`: the row slot whose query fills position (p, j) of the
    /// prompt layout (any live row where no row runs: its result is unused).
    pub layout_src: Tensor,
    /// `[rows]`: each row slot's position p * n + j in the prompt layout.
    pub rows_src: Tensor,
}

impl KvPools {
    /// Zeroed pools (a never-written position must be finite: it is masked,
    /// and 0 x NaN would still poison the sum).
    pub fn new(
        plan: &SlotPlan,
        layers: usize,
        kv_heads: i64,
        head_dim: i64,
        kind: Kind,
        device: Device,
        samples: usize,
    ) -> KvPools {
        let (p, lp) = (plan.prompt_slots as i64, plan.prompt_len as i64);
        let (r, lr) = (plan.row_slots as i64, plan.response_len as i64);
        let zeros = |n: i64, l: i64| Tensor::zeros([n, kv_heads, l, head_dim], (kind, device));
        let prompt = (0..layers).map(|_| (zeros(p, lp), zeros(p, lp))).collect();
        let rows = (0..layers).map(|_| (zeros(r, lr), zeros(r, lr))).collect();
        // An empty slot shows one (zero) key so that its softmax is defined.
        let prompt_pad = Tensor::ones([p, 1, 1, lp], (Kind::Bool, device));
        let _ = prompt_pad.narrow(3, lp - 1, 1).fill_(0);
        KvPools {
            prompt,
            prompt_pad,
            rows,
            samples: samples as i64,
        }
    }

    /// Stores a prefill's keys/values and mask (`cache`, `b` prompts, left
    /// padded) in prompt slots `slots` (`[b]` int64), right-aligned.
    pub fn write_prompts(&mut self, slots: &Tensor, cache: &KvCache) {
        let lp = self.prompt_pad.size()[3];
        let lb = cache.attention_mask.size()[1];
        let align = |x: &Tensor| {
            if lb == lp {
                return x.shallow_clone();
            }
            let s = x.size();
            let out = x.new_zeros([s[0], s[1], lp, s[3]], (x.kind(), x.device()));
            out.narrow(2, lp - lb, lb).copy_(x);
            out
        };
        for ((pk, pv), (k, v)) in self.prompt.iter_mut().zip(&cache.layers) {
            let _ = pk.index_copy_(0, slots, &align(k));
            let _ = pv.index_copy_(0, slots, &align(v));
        }
        let b = slots.size()[0];
        let pad = Tensor::ones([b, 1, 1, lp], (Kind::Bool, self.prompt_pad.device()));
        pad.narrow(3, lp - lb, lb)
            .copy_(&cache.attention_mask.eq(0).view([b, 1, 1, lb]));
        let _ = self.prompt_pad.index_copy_(0, slots, &pad);
    }

    /// Moves row slots `keep` (`[k]`, ascending) to slots 0..k.
    pub fn compact_rows(&mut self, keep: &Tensor) {
        let k = keep.size()[0];
        for (rk, rv) in &self.rows {
            rk.narrow(0, 0, k).copy_(&rk.index_select(0, keep));
            rv.narrow(0, 0, k).copy_(&rv.index_select(0, keep));
        }
    }

    /// Moves prompt slots `keep` (`[k]`, ascending) to slots 0..k.
    pub fn compact_prompts(&mut self, keep: &Tensor) {
        let k = keep.size()[0];
        for (pk, pv) in &self.prompt {
            pk.narrow(0, 0, k).copy_(&pk.index_select(0, keep));
            pv.narrow(0, 0, k).copy_(&pv.index_select(0, keep));
        }
        let pad = self.prompt_pad.index_select(0, keep);
        self.prompt_pad.narrow(0, 0, k).copy_(&pad);
    }

    pub fn kv_heads(&self) -> i64 {
        self.rows.first().map_or(0, |(k, _)| k.size()[1])
    }

    /// The attention of one decode step.
    pub fn step<'a>(&'a self, index: &'a StepIndex) -> StepAttention<'a> {
        StepAttention { pools: self, index }
    }
}

/// [`DecodeAttention`] over the pools for one step.
pub struct StepAttention<'a> {
    pools: &'a KvPools,
    index: &'a StepIndex,
}

impl DecodeAttention for StepAttention<'_> {
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let (pools, ix) = (self.pools, self.index);
        let s = q.size();
        let (r, heads, d) = (s[0], s[1], s[3]);
        let kv_heads = k.size()[1];
        let g = heads / kv_heads;
        let n = pools.samples;
        let kind = q.kind();

        // This token's key/value into each row's own positions.
        let (rk, rv) = &pools.rows[layer];
        let _ = rk
            .view([-1, d])
            .index_copy_(0, &ix.write, &k.reshape([r * kv_heads, d]));
        let _ = rv
            .view([-1, d])
            .index_copy_(0, &ix.write, &v.reshape([r * kv_heads, d]));
        let own_k = rk.narrow(0, 0, r).narrow(2, 0, ix.suffix_len);
        let own_v = rv.narrow(0, 0, r).narrow(2, 0, ix.suffix_len);

        let qg = q.reshape([r, kv_heads, g, d]) * (1.0 / (d as f64).sqrt());
        let part = |q: &Tensor, keys: &Tensor, values: &Tensor, pad: &Tensor| {
            let scores = q
                .matmul(&keys.transpose(-1, -2))
                .to_kind(Kind::Float)
                .masked_fill(pad, f64::NEG_INFINITY);
            let lse = scores.logsumexp([-1].as_slice(), true);
            let o = (scores - &lse).exp().to_kind(kind).matmul(values);
            (o, lse)
        };
        let (o_own, lse_own) = part(&qg, &own_k, &own_v, &ix.suffix_pad);

        // The prompt part in prompt layout: position (p, j) holds row j of prompt p.
        let p = ix.prompts;
        let (pk, pv) = &pools.prompt[layer];
        let qp = qg
            .index_select(0, &ix.layout_src)
            .view([p, n, kv_heads, g, d])
            .permute([0, 2, 1, 3, 4])
            .reshape([p, kv_heads, n * g, d]);
        let pad = pools.prompt_pad.narrow(0, 0, p);
        let (o_p, lse_p) = part(&qp, &pk.narrow(0, 0, p), &pv.narrow(0, 0, p), &pad);
        let to_rows = |t: Tensor, last: i64| {
            t.view([p, kv_heads, n, g, last])
                .permute([0, 2, 1, 3, 4])
                .reshape([p * n, kv_heads, g, last])
                .index_select(0, &ix.rows_src)
        };
        let (o_p, lse_p) = (to_rows(o_p, d), to_rows(lse_p, 1));

        // softmax over both key sets = the parts weighted by their share of the mass.
        let w = (lse_p - lse_own).sigmoid();
        let o_own = o_own.to_kind(Kind::Float);
        let o = &o_own + w * (o_p.to_kind(Kind::Float) - &o_own);
        o.to_kind(kind).reshape([r, 1, heads * d])
    }
}
