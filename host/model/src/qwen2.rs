//! The Qwen2 decoder (also the language model of Qwen2.5-VL): the shared
//! decoder stack of `decoder.rs` with Qwen2's self-attention (GQA, biased
//! q/k/v projections, rotary positions: 1D, or M-RoPE under Qwen2.5-VL).
//! Weight names are those of the checkpoint (`model.layers.N.self_attn.q_proj.weight`...).

use anyhow::Result;
use tch::Tensor;

use crate::config::TextConfig;
use crate::decoder::{SelfAttention, TextLm, TextModel};
use crate::layers::Linear;
use crate::rope;
use crate::weights::{Params, Weights};

/// Embeddings, decoder layers and the final norm (`model.*`).
pub type Qwen2Model = TextModel<Qwen2Attention>;

/// `Qwen2ForCausalLM`.
pub type Qwen2ForCausalLM = TextLm<Qwen2Attention>;

pub struct Qwen2Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl SelfAttention for Qwen2Attention {
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

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        core: &mut dyn FnMut(&Tensor, Tensor, Tensor) -> Tensor,
    ) -> Tensor {
        let (b, l) = (x.size()[0], x.size()[1]);
        let heads =
            |p: &Linear, n: i64| p.forward(x).view([b, l, n, self.head_dim]).transpose(1, 2);
        let q = heads(&self.q_proj, self.num_heads);
        let k = heads(&self.k_proj, self.num_kv_heads);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let (q, k) = rope::apply_text(&q, &k, cos, sin);
        self.o_proj.forward(&core(&q, k, v))
    }

    fn params(&self, name: &str, out: &mut Params) {
        self.q_proj.params(&format!("{name}.q_proj"), out);
        self.k_proj.params(&format!("{name}.k_proj"), out);
        self.v_proj.params(&format!("{name}.v_proj"), out);
        self.o_proj.params(&format!("{name}.o_proj"), out);
    }
}
