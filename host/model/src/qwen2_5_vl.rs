//! `Qwen2_5_VLForConditionalGeneration`: the vision tower's merged features
//! replace the `<|image_pad|>` token embeddings, then the Qwen2 decoder runs
//! with M-RoPE positions `[3, B, L]` computed by the processor.

use anyhow::{Context, Result};
use tch::Tensor;

use crate::causal_lm::{self, Decoder, DecoderInputs, DecoderLm, VisionLm};
use crate::config::ModelConfig;
use crate::lm::ForwardInputs;
use crate::qwen2::Qwen2Model;
use crate::qwen2_5_vl_vision::VisionTransformer;
use crate::vision_stages::{grid_rows, VisionOutput, VisionStages};
use crate::weights::{Params, Weights};

pub struct Qwen2_5VlForConditionalGeneration {
    pub visual: VisionTransformer,
    /// The decoder (`model.*` / `model.language_model.*`).
    pub model: Qwen2Model,
    pub lm_head: Tensor,
    pub config: ModelConfig,
    image_token_id: i64,
}

impl Qwen2_5VlForConditionalGeneration {
    pub fn load(w: &mut Weights, config: &ModelConfig) -> Result<Self> {
        let vc = config
            .vision
            .as_ref()
            .context("Qwen2.5-VL config without vision_config")?;
        let visual = VisionTransformer::load(w, vc)?;
        let model = Qwen2Model::load(w, &config.text)?;
        let lm_head =
            causal_lm::load_lm_head(w, config.text.tie_word_embeddings, &model.embed_tokens)?;
        let image_token_id = config
            .image_token_id
            .with_context(|| format!("{}: missing image_token_id", config.path.display()))?;
        Ok(Qwen2_5VlForConditionalGeneration {
            visual,
            model,
            lm_head,
            config: config.clone(),
            image_token_id,
        })
    }

    /// Merged image features `[N_tokens, hidden]` for all images, in order.
    /// Generation can compute them once per prompt and reuse them for its samples.
    pub fn image_features(&self, pixel_values: &Tensor, image_grid_thw: &Tensor) -> Result<Tensor> {
        let grids = grid_rows(image_grid_thw)?;
        self.visual.forward(pixel_values, &grids)
    }

    pub fn params(&self) -> Params {
        let mut out = Vec::new();
        self.visual.params(&mut out);
        self.model.params(&mut out);
        if !self.config.text.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.shallow_clone()));
        }
        out
    }
}

impl DecoderLm for Qwen2_5VlForConditionalGeneration {
    fn embed_inputs(&self, inputs: &ForwardInputs) -> Result<DecoderInputs> {
        let features = match causal_lm::image_inputs(inputs)? {
            Some((p, g)) => Some(VisionOutput {
                features: self.image_features(p, g)?,
                deepstack: Vec::new(),
            }),
            None => None,
        };
        self.embed_with_vision(inputs, features)
    }

    fn decoder(&self) -> &dyn Decoder {
        &self.model
    }

    fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    fn mrope(&self) -> bool {
        true
    }

    fn stop_token_ids(&self) -> &[i64] {
        &self.config.eos_token_ids
    }

    fn vision_lm(&self) -> Option<&dyn VisionLm> {
        Some(self)
    }

    fn image_tokens(&self) -> Option<crate::lm::ImageTokens> {
        let merge = self.config.vision.as_ref()?.spatial_merge_size;
        Some(crate::lm::ImageTokens {
            id: self.image_token_id,
            patches_per_token: merge * merge,
        })
    }
}

impl VisionLm for Qwen2_5VlForConditionalGeneration {
    fn tower(&self) -> &dyn VisionStages {
        &self.visual
    }

    fn embed_with_vision(
        &self,
        inputs: &ForwardInputs,
        vision: Option<VisionOutput>,
    ) -> Result<DecoderInputs> {
        causal_lm::vl_inputs(
            &self.model,
            inputs,
            self.image_token_id,
            vision.as_ref().map(|v| &v.features),
        )
    }
}
