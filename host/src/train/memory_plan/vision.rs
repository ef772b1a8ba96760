//! The vision tower's activations in the plan, by the decoder term's method:
//! what each stage keeps for the backward, per patch, counted from the code
//! (host/model/src/qwen2_5_vl_vision.rs, vision_layers.rs, layers.rs).
//!
//! Per patch and block (width D, MLP width I, storage s): the block's input,
//! the RMSNorm's normalised input and output (3D), the attention's q, k, v
//! and output as SDPA keeps them (4D; fused kernels keep no probabilities),
//! the output projection's input (D), the second norm's three (3D) and the
//! gated MLP's gate, its SiLU, up and product (4I): `(11D + 4I) * s`. The
//! merger keeps its norm's three and the 2x2-merged MLP's input and hidden
//! (5D per patch) and the features (`out / merge^2`); the blocks share the
//! 2D rotary tables (2 x head_dim f32 per patch), and the micro-batch's
//! pixels are gathered in f32 (plus their copy in a 16-bit compute dtype).
//! Qwen3-VL's plain MLP (2I) and DeepStack mergers are counted the same way
//! but were not measured; `grpo.freeze_prefixes` inside the tower are not
//! modelled (a tower with any trained variable counts as trained).
//!
//! - A tower that trains without checkpointing keeps every block.
//! - With `model.activation_checkpointing` it keeps each block's input and
//!   the merger's (`(blocks + 1) * D * s` per patch) from the forward to its
//!   own backward, recomputing one block at a time after the decoder's
//!   backward is done: the peak adds the larger of the decoder's term and
//!   one block.
//! - A frozen tower runs without a graph before the decoder: one block's
//!   activations at a time, then only its features stay.
//!
//! The plan does not read the data: each prompt is taken to hold one image
//! of `max_pixels` (the processor's bound, or `model.max_pixels`), square,
//! the largest the processor makes, or the largest whose tokens fit
//! `rollout.max_prompt_tokens` when that is smaller (longer prompts are
//! left out of the rollout); the grid is the processor's own.

use anyhow::{Context, Result};
use lmmhost_model::config::{Architecture, ModelConfig, VisionConfig};
use lmmhost_model::processor::image::{ImageProcessor, ImageProcessorConfig};

use crate::train::experiment::Experiment;
use crate::train::precision::Precision;

/// The tower's shape, as the vision term uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionShape {
    pub blocks: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub head_dim: u64,
    pub out_hidden: u64,
    /// Patches per merged token (`spatial_merge_size^2`).
    pub merge_unit: u64,
    /// Activations the block's MLP keeps per patch, in units of its width:
    /// 4 for the gated MLP (Qwen2.5-VL), 2 for a plain one (Qwen3-VL).
    pub mlp_terms: u64,
    /// DeepStack mergers (Qwen3-VL), each kept like the merger.
    pub deepstack: u64,
    /// Values of one flattened patch (C * T * P * P).
    pub patch_dim: u64,
}

impl VisionShape {
    pub fn of(arch: Architecture, v: &VisionConfig) -> VisionShape {
        VisionShape {
            blocks: v.depth as u64,
            hidden: v.hidden_size as u64,
            intermediate: v.intermediate_size as u64,
            head_dim: (v.hidden_size / v.num_heads.max(1)) as u64,
            out_hidden: v.out_hidden_size as u64,
            merge_unit: (v.spatial_merge_size * v.spatial_merge_size) as u64,
            mlp_terms: if arch == Architecture::Qwen3Vl { 2 } else { 4 },
            deepstack: v.deepstack_visual_indexes.len() as u64,
            patch_dim: v.patch_dim() as u64,
        }
    }
}

/// The images the plan assumes, and whether the tower trains.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VisionInputs {
    #[serde(skip)]
    pub shape: VisionShape,
    /// The pixel bound the image is taken at.
    pub max_pixels: u64,
    /// (height, width) the processor resizes it to.
    pub resized: (u64, u64),
    /// Patches of one prompt's image.
    pub patches: u64,
    /// Its tokens in the decoder (`patches / merge^2`).
    pub tokens: u64,
    /// The pixel bound's image would not fit `rollout.max_prompt_tokens`
    /// (such prompts are left out): the image is the largest that does.
    pub capped_by_prompt: bool,
    /// Some of the tower's variables train: it keeps a graph.
    pub trains: bool,
}

impl VisionInputs {
    /// The tower of `config` with one image of the largest size the
    /// processor in `exp.model.path` (or Qwen2.5-VL's defaults where the
    /// folder has no preprocessor_config.json) makes under the experiment's
    /// pixel bounds; `None` for a text model.
    pub fn from_experiment(
        exp: &Experiment,
        config: &ModelConfig,
        trains: bool,
    ) -> Result<Option<VisionInputs>> {
        let Some(v) = &config.vision else {
            return Ok(None);
        };
        let file = exp.model.path.join("preprocessor_config.json");
        let processor = if file.is_file() {
            ImageProcessorConfig::from_file(&file)?
        } else {
            ImageProcessorConfig::default()
        };
        let processor = processor
            .with_pixel_bounds(exp.model.min_pixels, exp.model.max_pixels)
            .context("model.min_pixels / model.max_pixels")?;
        Ok(Some(VisionInputs::at_max_pixels(
            VisionShape::of(config.architecture, v),
            processor,
            trains,
            exp.rollout.max_prompt_tokens as u64,
        )?))
    }

    /// One square image of `processor.max_pixels`, through the processor's
    /// own resize and token arithmetic; if its tokens exceed
    /// `prompt_tokens`, the largest whose tokens do not.
    pub fn at_max_pixels(
        shape: VisionShape,
        processor: ImageProcessorConfig,
        trains: bool,
        prompt_tokens: u64,
    ) -> Result<VisionInputs> {
        let v = Self::square(shape, processor.clone(), trains)?;
        if v.tokens <= prompt_tokens.max(1) {
            return Ok(v);
        }
        let unit = (processor.patch_size * processor.merge_size) as u64;
        let max = (prompt_tokens.max(1) * unit * unit) as usize;
        let min = processor.min_pixels.min(max);
        let capped = processor.with_pixel_bounds(Some(min), Some(max))?;
        Ok(VisionInputs {
            capped_by_prompt: true,
            ..Self::square(shape, capped, trains)?
        })
    }

    fn square(
        shape: VisionShape,
        processor: ImageProcessorConfig,
        trains: bool,
    ) -> Result<VisionInputs> {
        let max_pixels = processor.max_pixels as u64;
        let side = (max_pixels as f64).sqrt().floor() as usize;
        let p = ImageProcessor::new(processor);
        let resized = p.resized(side, side)?;
        let tokens = p.tokens(resized) as u64;
        Ok(VisionInputs {
            shape,
            max_pixels,
            resized: (resized.0 as u64, resized.1 as u64),
            patches: tokens * shape.merge_unit,
            tokens,
            capped_by_prompt: false,
            trains,
        })
    }

    /// Bytes per patch one block keeps for its backward (also what it holds
    /// at most while it runs without a graph).
    fn block_bytes(&self, s: u64) -> u64 {
        let m = &self.shape;
        (11 * m.hidden + m.mlp_terms * m.intermediate) * s
    }

    /// Bytes per patch the merger (and each DeepStack merger) keeps.
    fn merger_bytes(&self, s: u64) -> u64 {
        let m = &self.shape;
        (1 + m.deepstack) * (5 * m.hidden + m.out_hidden / m.merge_unit.max(1)) * s
    }

    /// The rotary tables the blocks share, per patch (f32).
    fn context_bytes(&self) -> u64 {
        2 * self.shape.head_dim * 4
    }

    /// The micro-batch's pixel values, gathered from its prompts in f32, and
    /// their copy in the compute dtype when that is not f32 (the patch
    /// embedding keeps it when it trains), per patch.
    fn pixel_bytes(&self, s: u64) -> u64 {
        self.shape.patch_dim * (4 + if s < 4 { s } else { 0 })
    }

    /// The merged features handed to the decoder, per patch.
    fn feature_bytes(&self, s: u64) -> u64 {
        self.shape.out_hidden / self.shape.merge_unit.max(1) * s
    }

    /// A pass without a graph over `images` images: one block at a time.
    pub fn no_grad_bytes(&self, images: u64, precision: Precision) -> u64 {
        let s = precision.storage_bytes();
        images * self.patches * (self.block_bytes(s) + self.context_bytes())
    }

    /// A pass of the tower without a graph before a decoder pass that
    /// holds `decoder`: the larger of the two, and the features stay.
    pub fn beside_no_grad(&self, decoder: u64, images: u64, precision: Precision) -> u64 {
        let (n, s) = (images * self.patches, precision.storage_bytes());
        decoder.max(self.no_grad_bytes(images, precision))
            + n * (self.feature_bytes(s) + self.pixel_bytes(s))
    }

    /// The update's activations of a micro-batch with `images` images,
    /// given the decoder's (`decoder`, the loss head included): how the two
    /// combine depends on whether the tower trains and on checkpointing.
    pub fn with_decoder(
        &self,
        decoder: u64,
        images: u64,
        precision: Precision,
        checkpointing: bool,
    ) -> u64 {
        let s = precision.storage_bytes();
        let n = images * self.patches;
        let m = &self.shape;
        if !self.trains {
            return self.beside_no_grad(decoder, images, precision);
        }
        let context = n * (self.context_bytes() + self.pixel_bytes(s));
        if checkpointing {
            let saved = n * (m.blocks + 1) * m.hidden * s + context;
            let recomputed = n * self.block_bytes(s).max(self.merger_bytes(s));
            saved + decoder.max(recomputed)
        } else {
            let kept = n * (m.blocks * self.block_bytes(s) + self.merger_bytes(s));
            decoder + kept + context
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> VisionShape {
        VisionShape {
            blocks: 8,
            hidden: 256,
            intermediate: 1024,
            head_dim: 64,
            out_hidden: 128,
            merge_unit: 4,
            mlp_terms: 4,
            deepstack: 0,
            patch_dim: 1176,
        }
    }

    /// The grid is the processor's: 448 x 448 at max_pixels 448^2 is 32 x 32
    /// patches, 256 tokens; Qwen2.5-VL's default bound (1,003,520 pixels)
    /// gives 1,001 x 1,001 -> 980 x 980 (smart_resize floors under the
    /// bound), 35 x 35 = 1,225 tokens.
    #[test]
    fn the_image_is_the_processors_largest() {
        let at = |max: usize| {
            let p = ImageProcessorConfig::default()
                .with_pixel_bounds(None, Some(max))
                .unwrap();
            VisionInputs::at_max_pixels(shape(), p, true, 4096).unwrap()
        };
        let v = at(448 * 448);
        assert_eq!((v.resized, v.patches, v.tokens), ((448, 448), 1024, 256));
        let d = at(28 * 28 * 1280);
        assert_eq!((d.resized, d.tokens, d.patches), ((980, 980), 1225, 4900));
        assert!(!d.capped_by_prompt);
        // The Instruct checkpoints' bound (12,845,056 pixels, 16,384 tokens)
        // does not fit 4,096 prompt tokens: the largest square that does.
        let c = at(12_845_056);
        assert_eq!((c.resized, c.tokens), ((1792, 1792), 4096));
        assert!(c.capped_by_prompt);
    }

    /// The three cases' arithmetic, per patch: 11 x 256 + 4 x 1024 = 6,912
    /// values a block keeps, 5 x 256 + 32 = 1,312 the merger, 128 floats
    /// of rotary tables, 1,176 of pixels.
    #[test]
    fn the_three_cases() {
        let p = ImageProcessorConfig::default()
            .with_pixel_bounds(None, Some(448 * 448))
            .unwrap();
        let mut v = VisionInputs::at_max_pixels(shape(), p, true, 4096).unwrap();
        let f32 = Precision::Full;
        let n = 2 * 1024;
        let decoder = 1_000_000;
        assert_eq!(
            v.with_decoder(decoder, 2, f32, false),
            decoder + n * (8 * 6912 * 4 + 1312 * 4 + 128 * 4 + 1176 * 4)
        );
        // Checkpointed: 9 saved inputs, then the larger of the decoder and one block.
        assert_eq!(
            v.with_decoder(decoder, 2, f32, true),
            n * (9 * 256 * 4 + 128 * 4 + 1176 * 4) + n * 6912 * 4
        );
        assert_eq!(
            v.with_decoder(u64::MAX / 4, 2, f32, true),
            n * (9 * 256 * 4 + 128 * 4 + 1176 * 4) + u64::MAX / 4
        );
        // Frozen: one block at a time, before the decoder; the features stay.
        v.trains = false;
        let one_block = n * (6912 * 4 + 128 * 4);
        for ckpt in [false, true] {
            let beside = n * (32 + 1176) * 4;
            assert_eq!(v.with_decoder(0, 2, f32, ckpt), one_block + beside);
            assert_eq!(
                v.with_decoder(u64::MAX / 4, 2, f32, ckpt),
                u64::MAX / 4 + beside
            );
        }
        assert_eq!(v.no_grad_bytes(1, f32), one_block / 2);
        // In bf16 the pixels' bf16 copy joins their f32 gather.
        let bf16 = Precision::Mixed(tch::Kind::BFloat16);
        assert_eq!(
            v.with_decoder(0, 1, bf16, false),
            1024 * (6912 * 2 + 128 * 4) + 1024 * (32 * 2 + 1176 * 6)
        );
    }
}
