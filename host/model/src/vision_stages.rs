//! A vision tower as stages: the patch (and position) embedding, the blocks
//! one at a time, the merger. `forward` of each tower runs these pieces in
//! order; activation checkpointing runs them without a graph, keeps each
//! block's input, and recomputes them one by one in the backward.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

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

/// `image_grid_thw` `[N, 3]` as rows.
pub fn grid_rows(grid: &Tensor) -> Result<Vec<[i64; 3]>> {
    let s = grid.size();
    if s.len() != 2 || s[1] != 3 {
        bail!("image_grid_thw must be [N_images, 3], got {s:?}");
    }
    let flat = Vec::<i64>::try_from(grid.to_kind(Kind::Int64).flatten(0, -1))
        .context("reading image_grid_thw")?;
    Ok(flat.chunks(3).map(|c| [c[0], c[1], c[2]]).collect())
}
