//! The decoder stack Qwen2 and Qwen3 share, generic over the one module that
//! differs, self-attention: token embeddings (`model.embed_tokens`), pre-norm
//! layers (`model.layers.N`: `input_layernorm`, `self_attn`,
//! `post_attention_layernorm`, SwiGLU `mlp`), the final norm (`model.norm`),
//! rotary positions (1D or M-RoPE), and the text-only causal LM on top
//! (`lm_head`, tied or not). Weight names are those of the checkpoint.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::causal_lm::{self, add_deepstack, Decoder, DecoderInputs, DecoderLm, Deepstack};
use crate::config::{ModelConfig, TextConfig};
use crate::layers::{attention_mask, cached_attention, run_layers, GatedMlp, LayerKv, RmsNorm};
use crate::lm::{DecodeAttention, ForwardInputs};
use crate::rope;
use crate::weights::{Params, Weights};

/// A decoder's self-attention (`model.layers.N.self_attn`).
pub trait SelfAttention: Sized {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self>;

    /// `x` `[B, L, H]`: projects it to queries `[B, H, L, D]` and keys/values
    /// `[B, kvH, L, D]`, applies the rotary positions, and returns the output
    /// projection of `core(q, k, v)` (`[B, L, H * D]`): the attention itself,
    /// over whatever past keys/values the caller holds.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        core: &mut dyn FnMut(&Tensor, Tensor, Tensor) -> Tensor,
    ) -> Tensor;

    fn params(&self, name: &str, out: &mut Params);
}

pub struct DecoderLayer<A> {
    pub self_attn: A,
    pub mlp: GatedMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl<A: SelfAttention> DecoderLayer<A> {
    fn load(w: &mut Weights, name: &str, c: &TextConfig) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        Ok(DecoderLayer {
            self_attn: A::load(w, &format!("{name}.self_attn"), c)?,
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

    /// The layer over `h` with the masked attention of [`cached_attention`]
    /// (`mask` bool `[B, 1, L, T]` over the cached + new keys); returns the
    /// output and this layer's keys/values for all T positions.
    fn forward(
        &self,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        past: Option<&LayerKv>,
        buffer: Option<&LayerKv>,
    ) -> (Tensor, LayerKv) {
        let mut kv = None;
        let h = self.forward_with(h, cos, sin, &mut |q, k, v| {
            let (o, all) = cached_attention(q, k, v, mask, past, buffer);
            kv = Some(all);
            o
        });
        (h, kv.expect("the layer's attention ran"))
    }

    /// The layer over `h` with `core` as its attention (see [`SelfAttention::forward`]).
    fn forward_with(
        &self,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        core: &mut dyn FnMut(&Tensor, Tensor, Tensor) -> Tensor,
    ) -> Tensor {
        let a = self
            .self_attn
            .forward(&self.input_layernorm.forward(h), cos, sin, core);
        // Not `+=`: an in-place add would overwrite a tensor autograd saved.
        let h = h + a;
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
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
pub struct TextModel<A> {
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer<A>>,
    pub norm: RmsNorm,
    pub config: TextConfig,
    inv_freq: Tensor,
}

impl<A: SelfAttention> TextModel<A> {
    pub fn load(w: &mut Weights, c: &TextConfig) -> Result<Self> {
        let embed_tokens = w.take("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::load(w, &format!("model.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(w, "model.norm", c.hidden_size, c.rms_norm_eps)?;
        let inv_freq = rope::inv_freq(c.head_dim, c.rope_theta, embed_tokens.device());
        Ok(TextModel {
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
                    (Some(f), Some(m)) => (add_deepstack(&h, m, f), kv),
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

impl<A: SelfAttention> Decoder for TextModel<A> {
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

    fn forward_inputs(
        &self,
        x: &DecoderInputs,
        key_mask: &Tensor,
        cache: Option<&mut Vec<LayerKv>>,
    ) -> Result<Tensor> {
        let ds = x.deepstack();
        self.forward_embeds_deepstack(&x.embeds, &x.positions, key_mask, cache, &[], ds.as_ref())
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn rotary(&self, positions: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        rope::text_cos_sin(positions, &self.inv_freq, self.config.mrope.as_ref(), kind)
    }

    fn layer(
        &self,
        i: usize,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        past: Option<&LayerKv>,
    ) -> (Tensor, LayerKv) {
        self.layers[i].forward(h, cos, sin, mask, past, None)
    }

    fn layer_params(&self, i: usize, out: &mut Params) {
        self.layers[i].params(&format!("model.layers.{i}"), out);
    }

    fn final_norm(&self, h: &Tensor) -> Tensor {
        self.norm.forward(h)
    }

    fn final_norm_params(&self, out: &mut Params) {
        self.norm.params("model.norm", out);
    }

    fn embedding_params(&self, out: &mut Params) {
        out.push((
            "model.embed_tokens.weight".into(),
            self.embed_tokens.shallow_clone(),
        ));
    }

    fn decode_with(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        attention: &mut dyn DecodeAttention,
    ) -> Result<Tensor> {
        let (cos, sin) = rope::text_cos_sin(
            positions,
            &self.inv_freq,
            self.config.mrope.as_ref(),
            embeds.kind(),
        )?;
        let mut h = embeds.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward_with(&h, &cos, &sin, &mut |q, k, v| {
                attention.attend(i, q, &k, &v)
            });
        }
        Ok(self.norm.forward(&h))
    }
}

/// A text-only causal LM (`Qwen2ForCausalLM`, `Qwen3ForCausalLM`).
pub struct TextLm<A> {
    pub model: TextModel<A>,
    /// Shares storage with `model.embed_tokens` when the embeddings are tied.
    pub lm_head: Tensor,
    pub config: ModelConfig,
}

impl<A: SelfAttention> TextLm<A> {
    pub fn load(w: &mut Weights, config: &ModelConfig) -> Result<Self> {
        let model = TextModel::load(w, &config.text)?;
        let lm_head =
            causal_lm::load_lm_head(w, config.text.tie_word_embeddings, &model.embed_tokens)?;
        Ok(TextLm {
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

impl<A: SelfAttention> DecoderLm for TextLm<A> {
    fn embed_inputs(&self, inputs: &ForwardInputs) -> Result<DecoderInputs> {
        causal_lm::check_ids(inputs.input_ids, inputs.attention_mask)?;
        let positions =
            causal_lm::text_positions_given(inputs, self.config.architecture.hf_name())?;
        Ok(DecoderInputs::text(
            self.model.embed(inputs.input_ids),
            positions,
        ))
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
