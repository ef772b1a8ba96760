//! `Qwen3VLForConditionalGeneration` (dense): the vision tower's merged
//! features replace the `<|image_pad|>` token embeddings, then the Qwen3
//! decoder runs with interleaved M-RoPE positions `[3, B, L]` computed by the
//! processor, its first layers adding the tower's DeepStack features to the
//! image tokens' hidden states.

use anyhow::{bail, Context, Result};
use tch::Tensor;

use crate::causal_lm::{self, Decoder, DecoderInputs, DecoderLm, VisionLm};
use crate::config::ModelConfig;
use crate::lm::ForwardInputs;
use crate::qwen3::Qwen3Model;
use crate::qwen3_vl_vision::Qwen3VlVisionModel;
use crate::vision_stages::{grid_rows, VisionOutput, VisionStages};
use crate::weights::{Params, Weights};

pub struct Qwen3VlForConditionalGeneration {
    pub visual: Qwen3VlVisionModel,
    /// The decoder (`model.language_model.*`, or `model.*` in the older layout).
    pub model: Qwen3Model,
    pub lm_head: Tensor,
    pub config: ModelConfig,
    image_token_id: i64,
}

impl Qwen3VlForConditionalGeneration {
    pub fn load(w: &mut Weights, config: &ModelConfig) -> Result<Self> {
        let vc = config
            .vision
            .as_ref()
            .context("Qwen3-VL config without vision_config")?;
        let visual = Qwen3VlVisionModel::load(w, vc)?;
        let model = Qwen3Model::load(w, &config.text)?;
        let lm_head =
            causal_lm::load_lm_head(w, config.text.tie_word_embeddings, &model.embed_tokens)?;
        let image_token_id = config
            .image_token_id
            .with_context(|| format!("{}: missing image_token_id", config.path.display()))?;
        if vc.deepstack_visual_indexes.len() as i64 > config.text.num_hidden_layers {
            bail!(
                "{}: {} DeepStack layers but the decoder has {}",
                config.path.display(),
                vc.deepstack_visual_indexes.len(),
                config.text.num_hidden_layers
            );
        }
        Ok(Qwen3VlForConditionalGeneration {
            visual,
            model,
            lm_head,
            config: config.clone(),
            image_token_id,
        })
    }

    /// Merged and DeepStack features for all images, in order.
    pub fn image_features(
        &self,
        pixel_values: &Tensor,
        image_grid_thw: &Tensor,
    ) -> Result<VisionOutput> {
        self.visual
            .forward(pixel_values, &grid_rows(image_grid_thw)?)
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

impl DecoderLm for Qwen3VlForConditionalGeneration {
    fn embed_inputs(&self, inputs: &ForwardInputs) -> Result<DecoderInputs> {
        let vision = match causal_lm::image_inputs(inputs)? {
            Some((p, g)) => Some(self.image_features(p, g)?),
            None => None,
        };
        self.embed_with_vision(inputs, vision)
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

impl VisionLm for Qwen3VlForConditionalGeneration {
    fn tower(&self) -> &dyn VisionStages {
        &self.visual
    }

    fn embed_with_vision(
        &self,
        inputs: &ForwardInputs,
        vision: Option<VisionOutput>,
    ) -> Result<DecoderInputs> {
        let x = causal_lm::vl_inputs(
            &self.model,
            inputs,
            self.image_token_id,
            vision.as_ref().map(|v| &v.features),
        )?;
        let deepstack = vision.map(|v| (inputs.input_ids.eq(self.image_token_id), v.deepstack));
        Ok(DecoderInputs { deepstack, ..x })
    }
}
