//! A vision tower as stages: the patch (and position) embedding, the blocks
//! one at a time, the merger. `forward` of each tower runs these pieces in
//! order; activation checkpointing runs them without a graph, keeps each
//! block's input, and recomputes them one by one in the backward.

use anyhow::Result;
use tch::Tensor;

use crate::causal_lm::DecoderInputs;
use crate::lm::ForwardInputs;
use crate::vision_layers::SegmentPlan;
use crate::weights::Params;

/// What every block of one batch of images shares.
pub struct BlockContext {
    /// 2D rotary tables `[N, head_dim]`, in the blocks' patch order.
    pub cos: Tensor,
    pub sin: Tensor,
    /// Attention within each image frame.
    pub full: SegmentPlan,
    /// Attention within windows (Qwen2.5-VL's windowed blocks).
    pub windows: Option<SegmentPlan>,
    /// Restores the processor's merge-unit order after the merger (the
    /// blocks ran in window order).
    pub restore: Option<Tensor>,
}

/// The merged features of a batch of images, in image-token order.
pub struct VisionOutput {
    /// `[N_tokens, out_hidden]`: what replaces the image tokens' embeddings.
    pub features: Tensor,
    /// Per DeepStack layer, `[N_tokens, out_hidden]` (empty without DeepStack).
    pub deepstack: Vec<Tensor>,
}

pub trait VisionStages {
    /// `pixel_values` `[N, C*T*P*P]`, `grids` (t, h, w) per image in patches
    /// -> the first block's input `[N, hidden]` and what the blocks share.
    fn embed_patches(
        &self,
        pixel_values: &Tensor,
        grids: &[[i64; 3]],
    ) -> Result<(Tensor, BlockContext)>;

    /// The variables of [`VisionStages::embed_patches`].
    fn patch_params(&self, out: &mut Params);

    fn num_blocks(&self) -> usize;

    /// Block `i` over `x` -> its output and, when the block feeds a
    /// DeepStack layer, that layer's merged feature.
    fn block(&self, i: usize, x: &Tensor, ctx: &BlockContext) -> (Tensor, Option<Tensor>);

    /// The variables of [`VisionStages::block`] `i` (its DeepStack merger included).
    fn block_params(&self, i: usize, out: &mut Params);

    /// The last block's output -> merged features in image-token order.
    fn merge(&self, x: &Tensor, ctx: &BlockContext) -> Tensor;

    /// The variables of [`VisionStages::merge`].
    fn merge_params(&self, out: &mut Params);
}

/// A vision-language model: its tower, and how the tower's outputs enter
/// the decoder's inputs.
pub trait VisionLm {
    fn tower(&self) -> &dyn VisionStages;

    /// The decoder's inputs with `vision` (the tower's outputs for `inputs`'
    /// images; `None` without images) in place of the image tokens.
    fn embed_with_vision(
        &self,
        inputs: &ForwardInputs,
        vision: Option<VisionOutput>,
    ) -> Result<DecoderInputs>;
}

/// The tower's forward; with `saved`, each block's input is pushed to it
/// (the last entry is the merger's input), and the context is returned.
pub fn run<T: VisionStages + ?Sized>(
    tower: &T,
    pixel_values: &Tensor,
    grids: &[[i64; 3]],
    mut saved: Option<&mut Vec<Tensor>>,
) -> Result<(VisionOutput, BlockContext)> {
    let (mut x, ctx) = tower.embed_patches(pixel_values, grids)?;
    let mut deepstack = Vec::new();
    for i in 0..tower.num_blocks() {
        let (next, feature) = tower.block(i, &x, &ctx);
        if let Some(s) = saved.as_deref_mut() {
            s.push(x);
        }
        x = next;
        deepstack.extend(feature);
    }
    let features = tower.merge(&x, &ctx);
    if let Some(s) = saved {
        s.push(x);
    }
    Ok((
        VisionOutput {
            features,
            deepstack,
        },
        ctx,
    ))
}
