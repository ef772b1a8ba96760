//! The supported architectures behind one type: which network a config
//! builds, its parameters under their checkpoint names, and the [`CausalLm`]
//! it runs as. Adding an architecture is one variant here (see docs/model.md).

use anyhow::Result;
use tch::Tensor;

use crate::config::{Architecture, ModelConfig};
use crate::lm::{
    CausalLm, DecodeAttention, Entropy, ForwardInputs, ImageTokens, KvCache, ResponseLoss,
    ResponseRows,
};
use crate::qwen2::Qwen2ForCausalLM;
use crate::qwen2_5_vl::Qwen2_5VlForConditionalGeneration;
use crate::qwen3::Qwen3ForCausalLM;
use crate::qwen3_vl::Qwen3VlForConditionalGeneration;
use crate::weights::{Params, Weights};

/// A network of one of the supported architectures.
pub enum Model {
    Qwen2(Box<Qwen2ForCausalLM>),
    Qwen2_5Vl(Box<Qwen2_5VlForConditionalGeneration>),
    Qwen3(Box<Qwen3ForCausalLM>),
    Qwen3Vl(Box<Qwen3VlForConditionalGeneration>),
}

impl Model {
    /// The network `config` describes, its parameters taken from `w`.
    pub fn build(config: &ModelConfig, w: &mut Weights) -> Result<Self> {
        Ok(match config.architecture {
            Architecture::Qwen2 => Model::Qwen2(Box::new(Qwen2ForCausalLM::load(w, config)?)),
            Architecture::Qwen2_5Vl => Model::Qwen2_5Vl(Box::new(
                Qwen2_5VlForConditionalGeneration::load(w, config)?,
            )),
            Architecture::Qwen3 => Model::Qwen3(Box::new(Qwen3ForCausalLM::load(w, config)?)),
            Architecture::Qwen3Vl => {
                Model::Qwen3Vl(Box::new(Qwen3VlForConditionalGeneration::load(w, config)?))
            }
        })
    }

    /// Parameters by canonical name (tied lm_head not repeated).
    pub fn named_parameters(&self) -> Params {
        match self {
            Model::Qwen2(m) => m.params(),
            Model::Qwen2_5Vl(m) => m.params(),
            Model::Qwen3(m) => m.params(),
            Model::Qwen3Vl(m) => m.params(),
        }
    }

    pub fn as_lm(&self) -> &dyn CausalLm {
        match self {
            Model::Qwen2(m) => m.as_ref(),
            Model::Qwen2_5Vl(m) => m.as_ref(),
            Model::Qwen3(m) => m.as_ref(),
            Model::Qwen3Vl(m) => m.as_ref(),
        }
    }
}

impl CausalLm for Model {
    fn forward(&self, inputs: &ForwardInputs) -> Result<Tensor> {
        self.as_lm().forward(inputs)
    }
    fn prefill(&self, inputs: &ForwardInputs) -> Result<(Tensor, KvCache)> {
        self.as_lm().prefill(inputs)
    }
    fn decode_step(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.as_lm().decode_step(ids, cache)
    }
    fn decode_with(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention: &mut dyn DecodeAttention,
    ) -> Result<Tensor> {
        self.as_lm().decode_with(ids, positions, attention)
    }
    fn token_stats(
        &self,
        inputs: &ForwardInputs,
        targets: &Tensor,
        entropy: Entropy,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.as_lm().token_stats(inputs, targets, entropy)
    }
    fn response_token_stats(
        &self,
        prompts: &ForwardInputs,
        group: &Tensor,
        responses: &Tensor,
        response_mask: &Tensor,
        entropy: Entropy,
        temperature: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.as_lm().response_token_stats(
            prompts,
            group,
            responses,
            response_mask,
            entropy,
            temperature,
        )
    }
    fn response_loss_gradients(
        &self,
        rows: &ResponseRows,
        params: &[Tensor],
        loss: &mut ResponseLoss,
    ) -> Result<Vec<Tensor>> {
        self.as_lm().response_loss_gradients(rows, params, loss)
    }
    fn eos_token_ids(&self) -> &[i64] {
        self.as_lm().eos_token_ids()
    }
    fn image_tokens(&self) -> Option<ImageTokens> {
        self.as_lm().image_tokens()
    }
}
