//! Layers shared by the decoders and the vision towers, with their weights
//! under checkpoint names (`{name}.weight`, `{name}.bias`).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::lora::LoraAdapter;
use crate::weights::{Params, Weights};

/// `y = x W^T + b`, plus a LoRA adapter's output when the weight source asks
/// for one on this layer (see [`crate::lora`]).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub adapter: Option<LoraAdapter>,
}

impl Linear {
    pub fn load(
        w: &mut Weights,
        name: &str,
        out_dim: i64,
        in_dim: i64,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.take(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.take(&format!("{name}.bias"), &[out_dim])?)
        } else {
            None
        };
        let adapter = w
            .lora
            .as_ref()
            .filter(|c| c.applies_to(name))
            .map(|c| LoraAdapter::new(c, out_dim, in_dim, &weight, &w.adapter_switch));
        Ok(Linear {
            weight,
            bias,
            adapter,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match &self.adapter {
            Some(a) if a.is_on() => y + a.forward(x),
            _ => y,
        }
    }
    pub fn params(&self, name: &str, out: &mut Params) {
        out.push((format!("{name}.weight"), self.weight.shallow_clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{name}.bias"), b.shallow_clone()));
        }
        if let Some(a) = &self.adapter {
            a.params(name, out);
        }
    }
}

/// RMSNorm computed in float32, cast back before the weight is applied (as transformers).
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(w: &mut Weights, name: &str, dim: i64, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: w.take(&format!("{name}.weight"), &[dim])?,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = xf * (var + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
    pub fn params(&self, name: &str, out: &mut Params) {
        out.push((format!("{name}.weight"), self.weight.shallow_clone()));
    }
}

/// LayerNorm with weight and bias (the Qwen3-VL vision tower's).
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, name: &str, dim: i64, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.take(&format!("{name}.weight"), &[dim])?,
            bias: w.take(&format!("{name}.bias"), &[dim])?,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
    pub fn params(&self, name: &str, out: &mut Params) {
        out.push((format!("{name}.weight"), self.weight.shallow_clone()));
        out.push((format!("{name}.bias"), self.bias.shallow_clone()));
    }
}

/// `down(silu(gate(x)) * up(x))`; the vision tower's MLP is the same with biases.
pub struct GatedMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl GatedMlp {
    pub fn load(w: &mut Weights, name: &str, hidden: i64, inter: i64, bias: bool) -> Result<Self> {
        Ok(GatedMlp {
            gate_proj: Linear::load(w, &format!("{name}.gate_proj"), inter, hidden, bias)?,
            up_proj: Linear::load(w, &format!("{name}.up_proj"), inter, hidden, bias)?,
            down_proj: Linear::load(w, &format!("{name}.down_proj"), hidden, inter, bias)?,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
    pub fn params(&self, name: &str, out: &mut Params) {
        self.gate_proj.params(&format!("{name}.gate_proj"), out);
        self.up_proj.params(&format!("{name}.up_proj"), out);
        self.down_proj.params(&format!("{name}.down_proj"), out);
    }
}

/// Per-layer keys and values `[B, kvH, T, D]`.
pub type LayerKv = (Tensor, Tensor);

/// Grouped-query attention of new queries `q` `[B, H, L, D]` over the cached
/// keys/values `past` and the new ones `k`, `v` `[B, kvH, L, D]`, through
/// SDPA with the bool `mask` `[B, 1, L, T]`. With a `buffer` that has room
/// (see [`crate::lm::KvCache::buffers`]) the new keys/values are written into
/// it in place. Returns the output `[B, L, H * D]` and the keys/values of all
/// T positions.
pub fn cached_attention(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    mask: &Tensor,
    past: Option<&LayerKv>,
    buffer: Option<&LayerKv>,
) -> (Tensor, LayerKv) {
    let s = q.size();
    let (b, num_heads, l, head_dim) = (s[0], s[1], s[2], s[3]);
    let num_kv_heads = k.size()[1];
    let (k, v) = match (past, buffer) {
        // `past` is the first T positions of `buffer`: write in place.
        (Some((pk, _)), Some((bk, bv))) if pk.size()[2] + l <= bk.size()[2] => {
            let t = pk.size()[2];
            bk.narrow(2, t, l).copy_(&k);
            bv.narrow(2, t, l).copy_(&v);
            (bk.narrow(2, 0, t + l), bv.narrow(2, 0, t + l))
        }
        (Some((pk, pv)), _) => (Tensor::cat(&[pk, &k], 2), Tensor::cat(&[pv, &v], 2)),
        (None, _) => (k, v),
    };
    let groups = num_heads / num_kv_heads;
    let o = if l == 1 && groups > 1 {
        // Decoding: the `groups` query heads of a KV head become `groups`
        // queries of it, so the cache is read in place instead of being
        // copied `groups` times per step (the mask `[B, 1, 1, T]` broadcasts).
        let qg = q.reshape([b, num_kv_heads, groups, head_dim]);
        Tensor::scaled_dot_product_attention(&qg, &k, &v, Some(mask), 0.0, false, None, false)
            .reshape([b, num_heads, 1, head_dim])
    } else {
        let (ke, ve) = (repeat_kv(&k, groups), repeat_kv(&v, groups));
        Tensor::scaled_dot_product_attention(q, &ke, &ve, Some(mask), 0.0, false, None, false)
    };
    let o = o.transpose(1, 2).reshape([b, l, num_heads * head_dim]);
    (o, (k, v))
}

/// `[B, kvH, T, D]` -> `[B, kvH * groups, T, D]`, each kv head serving `groups` query heads.
fn repeat_kv(x: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return x.shallow_clone();
    }
    let s = x.size();
    x.unsqueeze(2)
        .expand([s[0], s[1], groups, s[2], s[3]], false)
        .reshape([s[0], s[1] * groups, s[2], s[3]])
}

/// Bool `[B, 1, L, T]` mask for L new queries over T keys (the last L of which
/// are the queries themselves): causal, no attention to padding. A query always
/// sees itself so that padded rows never become all-masked (NaN in SDPA); their
/// outputs are ignored.
pub fn attention_mask(key_mask: &Tensor, l: i64) -> Tensor {
    let t = key_mask.size()[1];
    let dev = key_mask.device();
    let q_abs = Tensor::arange_start(t - l, t, (Kind::Int64, dev)).unsqueeze(1); // [L, 1]
    let k_idx = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0); // [1, T]
    let causal = k_idx.le_tensor(&q_abs); // [L, T]
    let diag = k_idx.eq_tensor(&q_abs);
    let keys = key_mask.ne(0).unsqueeze(1); // [B, 1, T]
    (causal
        .unsqueeze(0)
        .logical_and(&keys)
        .logical_or(&diag.unsqueeze(0)))
    .unsqueeze(1)
}

/// Runs `n_layers` decoder layers over `h`: `layer(i, h, past, buffer)`
/// returns layer i's output and its keys/values. With `cache`, each layer's
/// past keys/values are read from it (when it is not empty) and replaced by
/// the extended ones; `buffers` are handed to the layers as they are.
pub fn run_layers(
    n_layers: usize,
    mut h: Tensor,
    mut cache: Option<&mut Vec<LayerKv>>,
    buffers: &[LayerKv],
    mut layer: impl FnMut(usize, &Tensor, Option<&LayerKv>, Option<&LayerKv>) -> (Tensor, LayerKv),
) -> Result<Tensor> {
    let has_past = cache.as_ref().is_some_and(|c| !c.is_empty());
    if has_past && cache.as_ref().is_some_and(|c| c.len() != n_layers) {
        bail!(
            "KV cache has {} layers, the model {n_layers}",
            cache.map_or(0, |c| c.len()),
        );
    }
    let mut new_kv = Vec::with_capacity(n_layers);
    for i in 0..n_layers {
        let past = if has_past {
            cache.as_ref().map(|c| &c[i])
        } else {
            None
        };
        let (out, kv) = layer(i, &h, past, buffers.get(i));
        h = out;
        new_kv.push(kv);
    }
    if let Some(c) = cache.as_mut() {
        **c = new_kv;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_and_hides_left_padding() {
        let key_mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1]).reshape([2, 3]);
        let m = attention_mask(&key_mask, 3);
        let v: Vec<i64> = Vec::try_from(m.to_kind(Kind::Int64).flatten(0, -1)).unwrap();
        // Row 0: padded query 0 sees only itself; others skip the pad key.
        assert_eq!(&v[..9], &[1, 0, 0, 0, 1, 0, 0, 1, 1]);
        assert_eq!(&v[9..], &[1, 0, 0, 1, 1, 0, 1, 1, 1]);
        // One new query over 3 cached keys + itself.
        let km = Tensor::from_slice(&[0i64, 1, 1, 1]).reshape([1, 4]);
        let v: Vec<i64> =
            Vec::try_from(attention_mask(&km, 1).to_kind(Kind::Int64).flatten(0, -1)).unwrap();
        assert_eq!(v, vec![0, 1, 1, 1]);
    }
}
