//! The Qwen3 decoder (also the language model of Qwen3-VL): the shared
//! decoder stack of `decoder.rs` with Qwen3's self-attention: an RMSNorm over
//! each head's queries and keys before the rotation (`q_norm`, `k_norm`),
//! q/k/v/o biases only with `attention_bias`. Qwen3-VL runs it with
//! interleaved M-RoPE and adds its DeepStack features after the first layers.
//! Weight names are those of the checkpoint (`model.layers.N.self_attn.q_norm.weight`...).

use anyhow::Result;
use tch::Tensor;

use crate::config::TextConfig;
use crate::decoder::{SelfAttention, TextLm, TextModel};
use crate::layers::{Linear, RmsNorm};
use crate::rope;
use crate::weights::{Params, Weights};

/// Embeddings, decoder layers and the final norm (`model.*`).
pub type Qwen3Model = TextModel<Qwen3Attention>;

/// `Qwen3ForCausalLM`.
pub type Qwen3ForCausalLM = TextLm<Qwen3Attention>;

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

impl SelfAttention for Qwen3Attention {
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

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        core: &mut dyn FnMut(&Tensor, Tensor, Tensor) -> Tensor,
    ) -> Tensor {
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
        self.o_proj.forward(&core(&q, k, v))
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
