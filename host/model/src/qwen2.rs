//! The Qwen2 decoder (also the language model of Qwen2.5-VL): token embeddings,
//! GQA attention through SDPA with a causal + left-padding mask, RMSNorm in
//! float32, SwiGLU MLP, rotary positions (1D or M-RoPE), KV cache, lm_head.
//! Weight names are those of the checkpoint (`model.layers.N.self_attn.q_proj.weight`...).

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::checkpoint::{Params, Weights};
use crate::config::{ModelConfig, TextConfig};
use crate::lm::{Entropy, ForwardInputs, KvCache};
use crate::rope;

/// `y = x W^T + b`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
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
        Ok(Linear { weight, bias })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
    pub fn params(&self, name: &str, out: &mut Params) {
        out.push((format!("{name}.weight"), self.weight.shallow_clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{name}.bias"), b.shallow_clone()));
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

pub struct Qwen2Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Qwen2Attention {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self> {
        let (h, d) = (c.hidden_size, c.head_dim);
        Ok(Qwen2Attention {
            q_proj: Linear::load(
                w,
                &format!("{name}.q_proj"),
                c.num_attention_heads * d,
                h,
                true,
            )?,
            k_proj: Linear::load(
                w,
                &format!("{name}.k_proj"),
                c.num_key_value_heads * d,
                h,
                true,
            )?,
            v_proj: Linear::load(
                w,
                &format!("{name}.v_proj"),
                c.num_key_value_heads * d,
                h,
                true,
            )?,
            o_proj: Linear::load(
                w,
                &format!("{name}.o_proj"),
                h,
                c.num_attention_heads * d,
                false,
            )?,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: d,
        })
    }

    /// `x` `[B, L, H]`; `mask` bool `[B, 1, L, T]` over the cached + new keys.
    /// Returns the output and this layer's keys/values for all T positions.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        buffer: Option<&(Tensor, Tensor)>,
    ) -> (Tensor, (Tensor, Tensor)) {
        let (b, l) = (x.size()[0], x.size()[1]);
        let q = self
            .q_proj
            .forward(x)
            .view([b, l, self.num_heads, self.head_dim])
            .transpose(1, 2);
        let k = self
            .k_proj
            .forward(x)
            .view([b, l, self.num_kv_heads, self.head_dim])
            .transpose(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .view([b, l, self.num_kv_heads, self.head_dim])
            .transpose(1, 2);
        let (q, k) = rope::apply_text(&q, &k, cos, sin);
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
        let groups = self.num_heads / self.num_kv_heads;
        let o = if l == 1 && groups > 1 {
            // Decoding: the `groups` query heads of a KV head become `groups`
            // queries of it, so the cache is read in place instead of being
            // copied `groups` times per step (the mask `[B, 1, 1, T]` broadcasts).
            let qg = q.reshape([b, self.num_kv_heads, groups, self.head_dim]);
            Tensor::scaled_dot_product_attention(&qg, &k, &v, Some(mask), 0.0, false, None, false)
                .reshape([b, self.num_heads, 1, self.head_dim])
        } else {
            let (ke, ve) = (repeat_kv(&k, groups), repeat_kv(&v, groups));
            Tensor::scaled_dot_product_attention(&q, &ke, &ve, Some(mask), 0.0, false, None, false)
        };
        let o = o
            .transpose(1, 2)
            .reshape([b, l, self.num_heads * self.head_dim]);
        (self.o_proj.forward(&o), (k, v))
    }

    fn params(&self, name: &str, out: &mut Params) {
        self.q_proj.params(&format!("{name}.q_proj"), out);
        self.k_proj.params(&format!("{name}.k_proj"), out);
        self.v_proj.params(&format!("{name}.v_proj"), out);
        self.o_proj.params(&format!("{name}.o_proj"), out);
    }
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

pub struct Qwen2DecoderLayer {
    pub self_attn: Qwen2Attention,
    pub mlp: GatedMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl Qwen2DecoderLayer {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self> {
        Ok(Qwen2DecoderLayer {
            self_attn: Qwen2Attention::load(w, &format!("{name}.self_attn"), c)?,
            mlp: GatedMlp::load(
                w,
                &format!("{name}.mlp"),
                c.hidden_size,
                c.intermediate_size,
                false,
            )?,
            input_layernorm: RmsNorm::load(
                w,
                &format!("{name}.input_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            )?,
            post_attention_layernorm: RmsNorm::load(
                w,
                &format!("{name}.post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            )?,
        })
    }
}

/// Embeddings, decoder layers and the final norm (`model.*`).
pub struct Qwen2Model {
    pub embed_tokens: Tensor,
    pub layers: Vec<Qwen2DecoderLayer>,
    pub norm: RmsNorm,
    pub config: TextConfig,
    inv_freq: Tensor,
}

impl Qwen2Model {
    pub fn load(w: &mut Weights, c: &TextConfig) -> Result<Self> {
        let embed_tokens = w.take("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Qwen2DecoderLayer::load(w, &format!("model.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(w, "model.norm", c.hidden_size, c.rms_norm_eps)?;
        let inv_freq = rope::inv_freq(c.head_dim, c.rope_theta, embed_tokens.device());
        Ok(Qwen2Model {
            embed_tokens,
            layers,
            norm,
            config: c.clone(),
            inv_freq,
        })
    }

    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    /// Runs the decoder over `embeds` `[B, L, H]`. `key_mask` `[B, T]` covers
    /// the cached and the new tokens (T = cached + L). With `cache`, the
    /// per-layer keys/values are read from it (if non-empty) and replaced by the
    /// extended ones. Returns the final-norm hidden states `[B, L, H]`.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        cache: Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        self.forward_embeds_buffered(embeds, positions, key_mask, cache, &[])
    }

    /// [`Qwen2Model::forward_embeds`] writing new keys/values into `buffers`
    /// (see [`KvCache::buffers`]) when they have room.
    pub fn forward_embeds_buffered(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        mut cache: Option<&mut Vec<(Tensor, Tensor)>>,
        buffers: &[(Tensor, Tensor)],
    ) -> Result<Tensor> {
        let l = embeds.size()[1];
        let (cos, sin) = rope::text_cos_sin(
            positions,
            &self.inv_freq,
            self.config.mrope_section.as_deref(),
            embeds.kind(),
        )?;
        let mask = attention_mask(key_mask, l);
        let mut h = embeds.shallow_clone();
        let has_past = cache.as_ref().is_some_and(|c| !c.is_empty());
        if has_past && cache.as_ref().is_some_and(|c| c.len() != self.layers.len()) {
            bail!(
                "KV cache has {} layers, the model {}",
                cache.map_or(0, |c| c.len()),
                self.layers.len()
            );
        }
        let mut new_kv = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let past = if has_past {
                cache.as_ref().map(|c| &c[i])
            } else {
                None
            };
            let (a, kv) = layer.self_attn.forward(
                &layer.input_layernorm.forward(&h),
                &cos,
                &sin,
                &mask,
                past,
                buffers.get(i),
            );
            // Not `+=`: an in-place add would overwrite a tensor autograd saved.
            h = &h + a;
            h = &h
                + layer
                    .mlp
                    .forward(&layer.post_attention_layernorm.forward(&h));
            new_kv.push(kv);
        }
        if let Some(c) = cache.as_mut() {
            **c = new_kv;
        }
        Ok(self.norm.forward(&h))
    }

    pub fn params(&self, out: &mut Params) {
        out.push((
            "model.embed_tokens.weight".into(),
            self.embed_tokens.shallow_clone(),
        ));
        for (i, l) in self.layers.iter().enumerate() {
            let n = format!("model.layers.{i}");
            l.self_attn.params(&format!("{n}.self_attn"), out);
            l.mlp.params(&format!("{n}.mlp"), out);
            l.input_layernorm
                .params(&format!("{n}.input_layernorm"), out);
            l.post_attention_layernorm
                .params(&format!("{n}.post_attention_layernorm"), out);
        }
        self.norm.params("model.norm", out);
    }
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

/// Positions transformers' generate uses for a left-padded batch: cumsum of the
/// mask minus one (padding gets 1, never attended to).
pub fn positions_from_mask(mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Int64);
    (m.cumsum(-1, Kind::Int64) - 1).masked_fill(&m.eq(0), 1)
}

/// Per sequence, the position the next token gets: the largest position of a
/// real token plus one. `positions` `[B, L]` or `[3, B, L]`, `mask` `[B, L]`.
pub fn next_positions(positions: &Tensor, mask: &Tensor) -> Tensor {
    let pad = mask.eq(0);
    if positions.dim() == 3 {
        let p = positions.masked_fill(&pad.unsqueeze(0), -1);
        p.amax([0, 2].as_slice(), false) + 1
    } else {
        positions.masked_fill(&pad, -1).amax([1].as_slice(), false) + 1
    }
}

/// Log-probabilities of `targets` `[B, L]` given final hidden states `[B, L, H]`
/// and the output projection, chunk by chunk over the sequence so that at most
/// one chunk of logits exists at a time. Half-precision models never build a
/// float32 logits tensor that autograd keeps: the log-sum-exp comes from a
/// detached float32 copy, and its gradient (`-softmax`) enters through a
/// zero-valued term on the model-dtype logits.
pub fn chunked_token_stats(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    entropy: Entropy,
) -> Result<(Tensor, Option<Tensor>)> {
    // ~64M logits per chunk (256 MB in float32).
    token_stats_in_chunks(hidden, lm_head, targets, 1 << 26, entropy)
}

/// Log-probabilities only, with at most `budget` logits per chunk.
pub fn token_logprobs_in_chunks(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    budget: i64,
) -> Result<Tensor> {
    Ok(token_stats_in_chunks(hidden, lm_head, targets, budget, Entropy::Off)?.0)
}

/// [`chunked_token_stats`] with at most `budget` logits per chunk.
pub fn token_stats_in_chunks(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    budget: i64,
    entropy: Entropy,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, l) = (hidden.size()[0], hidden.size()[1]);
    if targets.size() != [b, l] {
        bail!(
            "targets must be [B, L] = [{b}, {l}], got {:?}",
            targets.size()
        );
    }
    let vocab = lm_head.size()[0];
    let chunk = (budget / (b * vocab).max(1)).clamp(1, l.max(1));
    let targets = targets.to_kind(Kind::Int64);
    let mut out = Vec::new();
    let mut entropies = Vec::new();
    let mut start = 0;
    while start < l {
        let n = chunk.min(l - start);
        let logits = hidden.narrow(1, start, n).linear(lm_head, None::<&Tensor>);
        if entropy != Entropy::Off {
            // H = lse - sum(p * z), in float32.
            let h = || {
                let z = logits.to_kind(Kind::Float);
                let lse = z.logsumexp([-1].as_slice(), true);
                let p = (&z - &lse).exp();
                (lse - (p * &z).sum_dim_intlist([-1].as_slice(), true, Kind::Float)).squeeze_dim(-1)
            };
            entropies.push(if entropy == Entropy::Detached {
                tch::no_grad(h)
            } else {
                h()
            });
        }
        let t = targets.narrow(1, start, n).unsqueeze(-1);
        let lp = if logits.kind() == Kind::Float || logits.kind() == Kind::Double {
            let lse = logits.logsumexp([-1].as_slice(), true);
            (logits.gather(-1, &t, false) - lse)
                .squeeze_dim(-1)
                .to_kind(Kind::Float)
        } else {
            let lse = tch::no_grad(|| logits.to_kind(Kind::Float).logsumexp([-1].as_slice(), true));
            let mut lp = logits.gather(-1, &t, false).to_kind(Kind::Float) - &lse;
            if logits.requires_grad() {
                let p = tch::no_grad(|| {
                    (logits.to_kind(Kind::Float) - &lse)
                        .exp()
                        .to_kind(logits.kind())
                });
                let s = (p * &logits).sum_dim_intlist([-1].as_slice(), true, Kind::Float);
                lp = &lp - (&s - s.detach());
            }
            lp.squeeze_dim(-1)
        };
        out.push(lp);
        start += n;
    }
    let entropy = (entropy != Entropy::Off).then(|| Tensor::cat(&entropies, 1));
    Ok((Tensor::cat(&out, 1), entropy))
}

/// `Qwen2ForCausalLM`.
pub struct Qwen2ForCausalLM {
    pub model: Qwen2Model,
    /// Shares storage with `model.embed_tokens` when the embeddings are tied.
    pub lm_head: Tensor,
    pub config: ModelConfig,
}

impl Qwen2ForCausalLM {
    pub fn load(w: &mut Weights, config: &ModelConfig) -> Result<Self> {
        let c = &config.text;
        let model = Qwen2Model::load(w, c)?;
        let lm_head = load_lm_head(w, c, &model.embed_tokens)?;
        Ok(Qwen2ForCausalLM {
            model,
            lm_head,
            config: config.clone(),
        })
    }

    fn hidden(
        &self,
        inputs: &ForwardInputs,
        cache: Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<(Tensor, Tensor)> {
        if inputs.pixel_values.is_some() {
            bail!("Qwen2ForCausalLM is a text-only model but the inputs carry images");
        }
        check_ids(inputs.input_ids, inputs.attention_mask)?;
        let positions = match inputs.position_ids {
            Some(p) if p.dim() == 2 => p.shallow_clone(),
            Some(p) => bail!(
                "Qwen2ForCausalLM expects [B, L] position ids, got {:?}",
                p.size()
            ),
            None => positions_from_mask(inputs.attention_mask),
        };
        let embeds = self.model.embed(inputs.input_ids);
        let h = self
            .model
            .forward_embeds(&embeds, &positions, inputs.attention_mask, cache)?;
        Ok((h, positions))
    }

    pub fn params(&self) -> Params {
        let mut out = Vec::new();
        self.model.params(&mut out);
        if !self.config.text.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.shallow_clone()));
        }
        out
    }
}

pub(crate) fn load_lm_head(w: &mut Weights, c: &TextConfig, embed: &Tensor) -> Result<Tensor> {
    if c.tie_word_embeddings {
        // Some tied checkpoints still carry a copy; it must equal the embedding
        // shape, but the tie wins (as in transformers).
        if w.contains("lm_head.weight") {
            let _ = w.take("lm_head.weight", &[c.vocab_size, c.hidden_size])?;
        }
        Ok(embed.shallow_clone())
    } else {
        w.take("lm_head.weight", &[c.vocab_size, c.hidden_size])
    }
}

pub(crate) fn check_ids(ids: &Tensor, mask: &Tensor) -> Result<()> {
    if ids.dim() != 2 || ids.size() != mask.size() {
        bail!(
            "input_ids {:?} and attention_mask {:?} must both be [B, L]",
            ids.size(),
            mask.size()
        );
    }
    Ok(())
}

/// Prefill shared by both models: hidden states of the prompt -> last logits + cache.
pub(crate) fn finish_prefill(
    h: &Tensor,
    lm_head: &Tensor,
    layers: Vec<(Tensor, Tensor)>,
    mask: &Tensor,
    positions: &Tensor,
) -> (Tensor, KvCache) {
    let l = h.size()[1];
    let logits = h
        .narrow(1, l - 1, 1)
        .squeeze_dim(1)
        .linear(lm_head, None::<&Tensor>);
    let cache = KvCache {
        layers,
        attention_mask: mask.to_kind(Kind::Int64),
        next_position: next_positions(positions, mask),
        buffers: Vec::new(),
    };
    (logits, cache)
}

/// [`CausalLm::response_token_stats`] of both models, given the prompts'
/// final hidden states `[G, Lp, H]`, their per-layer keys/values, mask and
/// rotary positions (`[G, Lp]` or `[3, G, Lp]` with `mrope`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn shared_prompt_stats(
    model: &Qwen2Model,
    lm_head: &Tensor,
    prompt_hidden: &Tensor,
    prompt_layers: Vec<(Tensor, Tensor)>,
    prompt_mask: &Tensor,
    prompt_positions: &Tensor,
    group: &Tensor,
    responses: &Tensor,
    response_mask: &Tensor,
    mrope: bool,
    entropy: Entropy,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, lr) = (responses.size()[0], responses.size()[1]);
    if response_mask.size() != [b, lr] || group.size() != [b] || lr < 1 {
        bail!(
            "responses {:?}, response_mask {:?} and group {:?} must be [B, Lr], [B, Lr] and [B] with Lr >= 1",
            responses.size(),
            response_mask.size(),
            group.size()
        );
    }
    let lp = prompt_hidden.size()[1];
    let group = group.to_kind(Kind::Int64);
    // index_select's backward sums the gradients of every copy into the prompt.
    let mut layers: Vec<(Tensor, Tensor)> = prompt_layers
        .iter()
        .map(|(k, v)| (k.index_select(0, &group), v.index_select(0, &group)))
        .collect();
    let key_mask = Tensor::cat(
        &[
            prompt_mask.to_kind(Kind::Int64).index_select(0, &group),
            response_mask.to_kind(Kind::Int64),
        ],
        1,
    );
    let next = next_positions(prompt_positions, prompt_mask).index_select(0, &group);
    let pos =
        next.unsqueeze(1) + Tensor::arange(lr, (Kind::Int64, responses.device())).unsqueeze(0); // [B, Lr]
    let positions = if mrope {
        pos.unsqueeze(0).expand([3, b, lr], false)
    } else {
        pos
    };
    let h = model
        .forward_embeds(
            &model.embed(responses),
            &positions,
            &key_mask,
            Some(&mut layers),
        )
        .context("response pass over the shared prompts")?;
    // Left padding puts every prompt's last token in the last column; its
    // state predicts response token 0, response position j predicts j + 1.
    let last = prompt_hidden.narrow(1, lp - 1, 1).index_select(0, &group);
    let hidden = Tensor::cat(&[last, h.narrow(1, 0, lr - 1)], 1);
    chunked_token_stats(&hidden, lm_head, responses, entropy)
}

/// One decode step shared by both models. `mrope`: positions are `[3, B, 1]`.
pub(crate) fn decode_step(
    model: &Qwen2Model,
    lm_head: &Tensor,
    ids: &Tensor,
    cache: &mut KvCache,
    mrope: bool,
) -> Result<Tensor> {
    let b = cache.attention_mask.size()[0];
    if ids.size() != [b, 1] {
        bail!(
            "decode_step expects ids [B, 1] = [{b}, 1], got {:?}",
            ids.size()
        );
    }
    let pos = cache.next_position.unsqueeze(1); // [B, 1]
    let positions = if mrope {
        pos.unsqueeze(0).expand([3, b, 1], false)
    } else {
        pos
    };
    let mask = Tensor::cat(
        &[
            &cache.attention_mask,
            &cache.attention_mask.ones_like().narrow(1, 0, 1),
        ],
        1,
    );
    let embeds = model.embed(ids);
    let h = model
        .forward_embeds_buffered(
            &embeds,
            &positions,
            &mask,
            Some(&mut cache.layers),
            &cache.buffers,
        )
        .context("decode step")?;
    cache.attention_mask = mask;
    cache.next_position = &cache.next_position + 1;
    Ok(h.squeeze_dim(1).linear(lm_head, None::<&Tensor>))
}

/// `CausalLm` for a model of the Qwen2 family: a type with a
/// `hidden(inputs, cache)` method (inputs to final hidden states and rotary
/// positions; Qwen2.5-VL runs its vision tower there), the decoder in `model`,
/// the output projection in `lm_head` and its `config`. `mrope`: positions are
/// `[3, B, L]` (M-RoPE). In `response_token_stats` the prompts (and their
/// images) run once per prompt, not per response.
macro_rules! impl_causal_lm {
    ($ty:ty, mrope = $mrope:expr) => {
        impl $crate::lm::CausalLm for $ty {
            fn forward(&self, inputs: &$crate::lm::ForwardInputs) -> anyhow::Result<tch::Tensor> {
                let (h, _) = self.hidden(inputs, None)?;
                Ok(h.linear(&self.lm_head, None::<&tch::Tensor>))
            }

            fn prefill(
                &self,
                inputs: &$crate::lm::ForwardInputs,
            ) -> anyhow::Result<(tch::Tensor, $crate::lm::KvCache)> {
                let mut layers = Vec::new();
                let (h, positions) = self.hidden(inputs, Some(&mut layers))?;
                Ok($crate::qwen2::finish_prefill(
                    &h,
                    &self.lm_head,
                    layers,
                    inputs.attention_mask,
                    &positions,
                ))
            }

            fn decode_step(
                &self,
                ids: &tch::Tensor,
                cache: &mut $crate::lm::KvCache,
            ) -> anyhow::Result<tch::Tensor> {
                $crate::qwen2::decode_step(&self.model, &self.lm_head, ids, cache, $mrope)
            }

            fn token_stats(
                &self,
                inputs: &$crate::lm::ForwardInputs,
                targets: &tch::Tensor,
                entropy: $crate::lm::Entropy,
            ) -> anyhow::Result<(tch::Tensor, Option<tch::Tensor>)> {
                let (h, _) = self.hidden(inputs, None)?;
                $crate::qwen2::chunked_token_stats(&h, &self.lm_head, targets, entropy)
            }

            fn response_token_stats(
                &self,
                prompts: &$crate::lm::ForwardInputs,
                group: &tch::Tensor,
                responses: &tch::Tensor,
                response_mask: &tch::Tensor,
                entropy: $crate::lm::Entropy,
            ) -> anyhow::Result<(tch::Tensor, Option<tch::Tensor>)> {
                let mut layers = Vec::new();
                let (h, positions) = self.hidden(prompts, Some(&mut layers))?;
                $crate::qwen2::shared_prompt_stats(
                    &self.model,
                    &self.lm_head,
                    &h,
                    layers,
                    prompts.attention_mask,
                    &positions,
                    group,
                    responses,
                    response_mask,
                    $mrope,
                    entropy,
                )
            }

            fn eos_token_ids(&self) -> &[i64] {
                &self.config.eos_token_ids
            }
        }
    };
}
pub(crate) use impl_causal_lm;

impl_causal_lm!(Qwen2ForCausalLM, mrope = false);

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn reference(hidden: &Tensor, head: &Tensor, t: &Tensor) -> Tensor {
        // Logits in the model dtype, softmax in float32: the exact quantity.
        let logits = hidden.linear(head, None::<&Tensor>).to_kind(Kind::Float);
        logits
            .log_softmax(-1, Kind::Float)
            .gather(-1, &t.unsqueeze(-1), false)
            .squeeze_dim(-1)
    }

    #[test]
    fn chunked_entropy_matches_the_softmax_entropy_and_its_gradient() {
        tch::manual_seed(4);
        let opts = (Kind::Float, Device::Cpu);
        let h = Tensor::randn([2, 5, 8], opts).set_requires_grad(true);
        let head = Tensor::randn([30, 8], opts);
        let t = Tensor::randint(30, [2, 5], (Kind::Int64, Device::Cpu));
        let (_, ent) =
            token_stats_in_chunks(&h, &head, &t, 2 * 30 * 2, Entropy::Differentiable).unwrap();
        let ent = ent.unwrap();
        let h2 = h.detach().set_requires_grad(true);
        let lp = h2
            .linear(&head, None::<&Tensor>)
            .log_softmax(-1, Kind::Float);
        let want = -(lp.exp() * &lp).sum_dim_intlist([-1].as_slice(), false, Kind::Float);
        let d = (&ent - &want).abs().max().double_value(&[]);
        assert!(d < 1e-5, "entropy differs by {d}");
        ent.sum(Kind::Float).backward();
        want.sum(Kind::Float).backward();
        let dg = (h.grad() - h2.grad()).abs().max().double_value(&[]);
        assert!(dg < 1e-5, "entropy gradient differs by {dg}");
        // Detached: same values, no autograd history.
        let (_, det) = token_stats_in_chunks(&h, &head, &t, 1 << 20, Entropy::Detached).unwrap();
        let det = det.unwrap();
        assert!(!det.requires_grad());
        assert!((&det - &want).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn chunked_logprobs_match_log_softmax_values_and_gradients() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let h = Tensor::randn([2, 7, 16], opts);
        let head = Tensor::randn([50, 16], opts);
        let t = Tensor::randint(50, [2, 7], (Kind::Int64, Device::Cpu));
        for kind in [Kind::Float, Kind::BFloat16] {
            let hk = h.to_kind(kind).detach().set_requires_grad(true);
            let headk = head.to_kind(kind);
            // 2 * 50 * 3 logits per chunk: chunks of 3, 3 and 1 positions.
            let lp = token_logprobs_in_chunks(&hk, &headk, &t, 300).unwrap();
            assert_eq!(lp.kind(), Kind::Float);
            let href = hk.detach().set_requires_grad(true);
            let want = reference(&href, &headk, &t);
            let d = (&lp - &want).abs().max().double_value(&[]);
            assert!(d < 1e-4, "{kind:?}: value differs by {d}");
            // bf16: the gradient's softmax term is rounded to bf16.
            let tol = if kind == Kind::Float { 1e-5 } else { 2e-2 };
            lp.sum(Kind::Float).backward();
            want.sum(Kind::Float).backward();
            let g = hk.grad().to_kind(Kind::Float);
            let gref = href.grad();
            let scale = gref.abs().max().double_value(&[]);
            let dg = (&g - &gref).abs().max().double_value(&[]) / scale;
            assert!(
                dg < 2.0 * tol,
                "{kind:?}: gradient differs by {dg} (relative)"
            );
        }
    }

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
