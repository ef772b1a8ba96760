//! The Qwen3 decoder (also the language model of Qwen3-VL): as Qwen2's, with
//! an RMSNorm over each head's queries and keys before the rotation
//! (`q_norm`, `k_norm`) and q/k/v/o biases only with `attention_bias`.
//! Qwen3-VL runs it with interleaved M-RoPE and adds its DeepStack features to
//! the image tokens' hidden states after the first layers.
//! Weight names are those of the checkpoint (`model.layers.N.self_attn.q_norm.weight`...).

use anyhow::Result;
use tch::Tensor;

use crate::causal_lm::{self, Decoder, DecoderLm};
use crate::config::{ModelConfig, TextConfig};
use crate::layers::{
    attention_mask, cached_attention, run_layers, GatedMlp, LayerKv, Linear, RmsNorm,
};
use crate::lm::ForwardInputs;
use crate::rope;
use crate::weights::{Params, Weights};

pub struct Qwen3Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Qwen3Attention {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self> {
        let (h, d, bias) = (c.hidden_size, c.head_dim, c.attention_bias);
        let (q_dim, kv_dim) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        Ok(Qwen3Attention {
            q_proj: Linear::load(w, &format!("{name}.q_proj"), q_dim, h, bias)?,
            k_proj: Linear::load(w, &format!("{name}.k_proj"), kv_dim, h, bias)?,
            v_proj: Linear::load(w, &format!("{name}.v_proj"), kv_dim, h, bias)?,
            o_proj: Linear::load(w, &format!("{name}.o_proj"), h, q_dim, bias)?,
            q_norm: RmsNorm::load(w, &format!("{name}.q_norm"), d, c.rms_norm_eps)?,
            k_norm: RmsNorm::load(w, &format!("{name}.k_norm"), d, c.rms_norm_eps)?,
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
        past: Option<&LayerKv>,
        buffer: Option<&LayerKv>,
    ) -> (Tensor, LayerKv) {
        let (b, l) = (x.size()[0], x.size()[1]);
        let split = |p: &Linear, n: i64| p.forward(x).view([b, l, n, self.head_dim]);
        let q = self
            .q_norm
            .forward(&split(&self.q_proj, self.num_heads))
            .transpose(1, 2);
        let k = self
            .k_norm
            .forward(&split(&self.k_proj, self.num_kv_heads))
            .transpose(1, 2);
        let v = split(&self.v_proj, self.num_kv_heads).transpose(1, 2);
        let (q, k) = rope::apply_text(&q, &k, cos, sin);
        let (o, kv) = cached_attention(&q, k, v, mask, past, buffer);
        (self.o_proj.forward(&o), kv)
    }

    fn params(&self, name: &str, out: &mut Params) {
        self.q_proj.params(&format!("{name}.q_proj"), out);
        self.k_proj.params(&format!("{name}.k_proj"), out);
        self.v_proj.params(&format!("{name}.v_proj"), out);
        self.o_proj.params(&format!("{name}.o_proj"), out);
        self.q_norm.params(&format!("{name}.q_norm"), out);
        self.k_norm.params(&format!("{name}.k_norm"), out);
    }
}

pub struct Qwen3DecoderLayer {
    pub self_attn: Qwen3Attention,
    pub mlp: GatedMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl Qwen3DecoderLayer {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        Ok(Qwen3DecoderLayer {
            self_attn: Qwen3Attention::load(w, &format!("{name}.self_attn"), c)?,
            mlp: GatedMlp::load(w, &format!("{name}.mlp"), h, c.intermediate_size, false)?,
            input_layernorm: RmsNorm::load(w, &format!("{name}.input_layernorm"), h, eps)?,
            post_attention_layernorm: RmsNorm::load(
                w,
                &format!("{name}.post_attention_layernorm"),
                h,
                eps,
            )?,
        })
    }

    fn forward(
        &self,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        past: Option<&LayerKv>,
        buffer: Option<&LayerKv>,
    ) -> (Tensor, LayerKv) {
        let (a, kv) = self.self_attn.forward(
            &self.input_layernorm.forward(h),
            cos,
            sin,
            mask,
            past,
            buffer,
        );
        // Not `+=`: an in-place add would overwrite a tensor autograd saved.
        let h = h + a;
        let h = &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h));
        (h, kv)
    }

    fn params(&self, name: &str, out: &mut Params) {
        self.self_attn.params(&format!("{name}.self_attn"), out);
        self.mlp.params(&format!("{name}.mlp"), out);
        self.input_layernorm
            .params(&format!("{name}.input_layernorm"), out);
        self.post_attention_layernorm
            .params(&format!("{name}.post_attention_layernorm"), out);
    }
}

/// Features added to the hidden states of the image tokens after the first
/// decoder layers (Qwen3-VL's DeepStack).
pub struct Deepstack<'a> {
    /// `[B, L]` bool: the image tokens.
    pub image_mask: &'a Tensor,
    /// Per layer from the first, `[N_image_tokens, H]` in token order.
    pub features: &'a [Tensor],
}

/// Embeddings, decoder layers and the final norm (`model.*`).
pub struct Qwen3Model {
    pub embed_tokens: Tensor,
    pub layers: Vec<Qwen3DecoderLayer>,
    pub norm: RmsNorm,
    pub config: TextConfig,
    inv_freq: Tensor,
}

impl Qwen3Model {
    pub fn load(w: &mut Weights, c: &TextConfig) -> Result<Self> {
        let embed_tokens = w.take("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Qwen3DecoderLayer::load(w, &format!("model.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(w, "model.norm", c.hidden_size, c.rms_norm_eps)?;
        let inv_freq = rope::inv_freq(c.head_dim, c.rope_theta, embed_tokens.device());
        Ok(Qwen3Model {
            embed_tokens,
            layers,
            norm,
            config: c.clone(),
            inv_freq,
        })
    }

    /// [`Decoder::forward_embeds`] that adds `deepstack` features after the
    /// first layers.
    pub fn forward_embeds_deepstack(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        cache: Option<&mut Vec<LayerKv>>,
        buffers: &[LayerKv],
        deepstack: Option<&Deepstack>,
    ) -> Result<Tensor> {
        let (cos, sin) = rope::text_cos_sin(
            positions,
            &self.inv_freq,
            self.config.mrope.as_ref(),
            embeds.kind(),
        )?;
        let mask = attention_mask(key_mask, embeds.size()[1]);
        let image_mask = deepstack.map(|d| d.image_mask.unsqueeze(-1));
        let h = run_layers(
            self.layers.len(),
            embeds.shallow_clone(),
            cache,
            buffers,
            |i, h, past, buffer| {
                let (h, kv) = self.layers[i].forward(h, &cos, &sin, &mask, past, buffer);
                match (deepstack.and_then(|d| d.features.get(i)), &image_mask) {
                    (Some(f), Some(m)) => {
                        let add = h.zeros_like().masked_scatter(m, &f.to_kind(h.kind()));
                        (h + add, kv)
                    }
                    _ => (h, kv),
                }
            },
        )?;
        Ok(self.norm.forward(&h))
    }

    pub fn params(&self, out: &mut Params) {
        out.push((
            "model.embed_tokens.weight".into(),
            self.embed_tokens.shallow_clone(),
        ));
        for (i, l) in self.layers.iter().enumerate() {
            l.params(&format!("model.layers.{i}"), out);
        }
        self.norm.params("model.norm", out);
    }
}

impl Decoder for Qwen3Model {
    fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    fn forward_embeds(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        cache: Option<&mut Vec<LayerKv>>,
        buffers: &[LayerKv],
    ) -> Result<Tensor> {
        self.forward_embeds_deepstack(embeds, positions, key_mask, cache, buffers, None)
    }
}

/// `Qwen3ForCausalLM`.
pub struct Qwen3ForCausalLM {
    pub model: Qwen3Model,
    /// Shares storage with `model.embed_tokens` when the embeddings are tied.
    pub lm_head: Tensor,
    pub config: ModelConfig,
}

impl Qwen3ForCausalLM {
    pub fn load(w: &mut Weights, config: &ModelConfig) -> Result<Self> {
        let model = Qwen3Model::load(w, &config.text)?;
        let lm_head =
            causal_lm::load_lm_head(w, config.text.tie_word_embeddings, &model.embed_tokens)?;
        Ok(Qwen3ForCausalLM {
            model,
            lm_head,
            config: config.clone(),
        })
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

impl DecoderLm for Qwen3ForCausalLM {
    fn hidden(
        &self,
        inputs: &ForwardInputs,
        cache: Option<&mut Vec<LayerKv>>,
    ) -> Result<(Tensor, Tensor)> {
        causal_lm::check_ids(inputs.input_ids, inputs.attention_mask)?;
        let positions = causal_lm::text_positions_given(inputs, "Qwen3ForCausalLM")?;
        let embeds = self.model.embed(inputs.input_ids);
        let h =
            self.model
                .forward_embeds(&embeds, &positions, inputs.attention_mask, cache, &[])?;
        Ok((h, positions))
    }

    fn decoder(&self) -> &dyn Decoder {
        &self.model
    }

    fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    fn mrope(&self) -> bool {
        false
    }

    fn stop_token_ids(&self) -> &[i64] {
        &self.config.eos_token_ids
    }
}
