//! The Qwen2 decoder (also the language model of Qwen2.5-VL): token embeddings,
//! GQA attention with biased q/k/v projections, RMSNorm in float32, SwiGLU
//! MLP, rotary positions (1D or M-RoPE), lm_head.
//! Weight names are those of the checkpoint (`model.layers.N.self_attn.q_proj.weight`...).

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
        let (q_dim, kv_dim) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        Ok(Qwen2Attention {
            q_proj: Linear::load(w, &format!("{name}.q_proj"), q_dim, h, true)?,
            k_proj: Linear::load(w, &format!("{name}.k_proj"), kv_dim, h, true)?,
            v_proj: Linear::load(w, &format!("{name}.v_proj"), kv_dim, h, true)?,
            o_proj: Linear::load(w, &format!("{name}.o_proj"), h, q_dim, false)?,
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
        let heads =
            |p: &Linear, n: i64| p.forward(x).view([b, l, n, self.head_dim]).transpose(1, 2);
        let q = heads(&self.q_proj, self.num_heads);
        let k = heads(&self.k_proj, self.num_kv_heads);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let (q, k) = rope::apply_text(&q, &k, cos, sin);
        let (o, kv) = cached_attention(&q, k, v, mask, past, buffer);
        (self.o_proj.forward(&o), kv)
    }

    fn params(&self, name: &str, out: &mut Params) {
        self.q_proj.params(&format!("{name}.q_proj"), out);
        self.k_proj.params(&format!("{name}.k_proj"), out);
        self.v_proj.params(&format!("{name}.v_proj"), out);
        self.o_proj.params(&format!("{name}.o_proj"), out);
    }
}

pub struct Qwen2DecoderLayer {
    pub self_attn: Qwen2Attention,
    pub mlp: GatedMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl Qwen2DecoderLayer {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        Ok(Qwen2DecoderLayer {
            self_attn: Qwen2Attention::load(w, &format!("{name}.self_attn"), c)?,
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

impl Decoder for Qwen2Model {
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
        let (cos, sin) = rope::text_cos_sin(
            positions,
            &self.inv_freq,
            self.config.mrope.as_ref(),
            embeds.kind(),
        )?;
        let mask = attention_mask(key_mask, embeds.size()[1]);
        let h = run_layers(
            self.layers.len(),
            embeds.shallow_clone(),
            cache,
            buffers,
            |i, h, past, buffer| self.layers[i].forward(h, &cos, &sin, &mask, past, buffer),
        )?;
        Ok(self.norm.forward(&h))
    }
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
        let model = Qwen2Model::load(w, &config.text)?;
        let lm_head =
            causal_lm::load_lm_head(w, config.text.tie_word_embeddings, &model.embed_tokens)?;
        Ok(Qwen2ForCausalLM {
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

impl DecoderLm for Qwen2ForCausalLM {
    fn hidden(
        &self,
        inputs: &ForwardInputs,
        cache: Option<&mut Vec<LayerKv>>,
    ) -> Result<(Tensor, Tensor)> {
        causal_lm::check_ids(inputs.input_ids, inputs.attention_mask)?;
        let positions = causal_lm::text_positions_given(inputs, "Qwen2ForCausalLM")?;
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
