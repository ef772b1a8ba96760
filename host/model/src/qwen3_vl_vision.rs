//! The Qwen3-VL vision tower (`visual.*`): Conv3d patch embedding with bias (a
//! linear map of each flattened patch, since stride = kernel), learned
//! position embeddings resampled bilinearly (corners aligned) from their
//! square grid to each image's grid, 2D rotary, LayerNorm blocks with full
//! attention within each image and a GELU (tanh) MLP, the patch merger
//! (LayerNorm, 2x2 merge, MLP with exact GELU), and the DeepStack mergers that
//! turn the outputs of the blocks in `deepstack_visual_indexes` into features
//! for the first decoder layers. Patches come in the processor's block-major
//! order and stay in it.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::config::VisionConfig;
use crate::layers::{LayerNorm, Linear};
use crate::rope;
use crate::vision_layers::{
    check_pixels, patch_positions, PatchEmbed, SegmentPlan, VisionAttention,
};
use crate::vision_stages::{self, BlockContext, VisionOutput, VisionStages};
use crate::weights::{Params, Weights};

/// `linear_fc2(gelu_tanh(linear_fc1(x)))`.
pub struct VisionMlp {
    pub linear_fc1: Linear,
    pub linear_fc2: Linear,
}

pub struct VisionBlock {
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub attn: VisionAttention,
    pub mlp: VisionMlp,
}

/// LayerNorm, 2x2 merge, `linear_fc2(gelu(linear_fc1(.)))`. The main merger
/// normalises each patch before merging; the DeepStack mergers normalise the
/// merged vector (`use_postshuffle_norm` in transformers).
pub struct PatchMerger {
    pub norm: LayerNorm,
    pub linear_fc1: Linear,
    pub linear_fc2: Linear,
    merged_dim: i64,
    norm_after_merge: bool,
}

pub struct Qwen3VlVisionModel {
    pub patch_embed: PatchEmbed,
    /// `visual.pos_embed.weight` `[num_position_embeddings, hidden]`.
    pub pos_embed: Tensor,
    pub blocks: Vec<VisionBlock>,
    pub merger: PatchMerger,
    pub deepstack_merger_list: Vec<PatchMerger>,
    pub config: VisionConfig,
    /// Side of the square position-embedding grid.
    side: i64,
}

impl VisionMlp {
    fn load(w: &mut Weights, name: &str, hidden: i64, inter: i64) -> Result<Self> {
        Ok(VisionMlp {
            linear_fc1: Linear::load(w, &format!("{name}.linear_fc1"), inter, hidden, true)?,
            linear_fc2: Linear::load(w, &format!("{name}.linear_fc2"), hidden, inter, true)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        self.linear_fc2
            .forward(&self.linear_fc1.forward(x).gelu("tanh"))
    }
    fn params(&self, name: &str, out: &mut Params) {
        self.linear_fc1.params(&format!("{name}.linear_fc1"), out);
        self.linear_fc2.params(&format!("{name}.linear_fc2"), out);
    }
}

impl PatchMerger {
    fn load(w: &mut Weights, name: &str, c: &VisionConfig, norm_after_merge: bool) -> Result<Self> {
        let m = c.spatial_merge_size;
        let merged_dim = c.hidden_size * m * m;
        let norm_dim = if norm_after_merge {
            merged_dim
        } else {
            c.hidden_size
        };
        Ok(PatchMerger {
            norm: LayerNorm::load(w, &format!("{name}.norm"), norm_dim, 1e-6)?,
            linear_fc1: Linear::load(
                w,
                &format!("{name}.linear_fc1"),
                merged_dim,
                merged_dim,
                true,
            )?,
            linear_fc2: Linear::load(
                w,
                &format!("{name}.linear_fc2"),
                c.out_hidden_size,
                merged_dim,
                true,
            )?,
            merged_dim,
            norm_after_merge,
        })
    }

    /// `x` `[N, hidden]` in block-major order -> `[N / merge^2, out_hidden]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = if self.norm_after_merge {
            self.norm.forward(&x.view([-1, self.merged_dim]))
        } else {
            self.norm.forward(x).view([-1, self.merged_dim])
        };
        self.linear_fc2
            .forward(&self.linear_fc1.forward(&h).gelu("none"))
    }

    fn params(&self, name: &str, out: &mut Params) {
        self.norm.params(&format!("{name}.norm"), out);
        self.linear_fc1.params(&format!("{name}.linear_fc1"), out);
        self.linear_fc2.params(&format!("{name}.linear_fc2"), out);
    }
}

/// Per patch of `grids` in block-major order, the 4 taps into the `side` x
/// `side` position-embedding grid (row-major) and their bilinear weights, as
/// `F.interpolate(mode="bilinear", align_corners=True)` resamples the grid to
/// the image's (h, w): the grid's corners land on the corner patches.
pub fn position_taps(grids: &[[i64; 3]], side: i64, merge: i64) -> (Vec<i64>, Vec<f32>) {
    // One axis: lower tap, upper tap, weight of the upper one (float32, as transformers).
    let axis = |i: i64, size: i64| -> (i64, i64, f32) {
        let src = i as f32 * (side - 1) as f32 / (size - 1).max(1) as f32;
        let floor = src.floor();
        let lo = (floor as i64).clamp(0, side - 1);
        let hi = (floor as i64 + 1).clamp(0, side - 1);
        (lo, hi, src - floor)
    };
    let mut idx = Vec::new();
    let mut wts = Vec::new();
    for g in grids {
        for [row, col] in patch_positions(&[*g], merge) {
            let (r0, r1, fr) = axis(row, g[1]);
            let (c0, c1, fc) = axis(col, g[2]);
            for (r, wr) in [(r0, 1.0 - fr), (r1, fr)] {
                for (c, wc) in [(c0, 1.0 - fc), (c1, fc)] {
                    idx.push(r * side + c);
                    wts.push(wr * wc);
                }
            }
        }
    }
    (idx, wts)
}

impl Qwen3VlVisionModel {
    pub fn load(w: &mut Weights, c: &VisionConfig) -> Result<Self> {
        let hd = c.hidden_size;
        let patch_embed = PatchEmbed::load(w, "visual.patch_embed.proj", c, true)?;
        let pos_embed = w.take("visual.pos_embed.weight", &[c.num_position_embeddings, hd])?;
        let mut blocks = Vec::new();
        for i in 0..c.depth {
            let n = format!("visual.blocks.{i}");
            blocks.push(VisionBlock {
                norm1: LayerNorm::load(w, &format!("{n}.norm1"), hd, 1e-6)?,
                norm2: LayerNorm::load(w, &format!("{n}.norm2"), hd, 1e-6)?,
                attn: VisionAttention::load(w, &format!("{n}.attn"), hd, c.num_heads)?,
                mlp: VisionMlp::load(w, &format!("{n}.mlp"), hd, c.intermediate_size)?,
            });
        }
        let merger = PatchMerger::load(w, "visual.merger", c, false)?;
        let deepstack_merger_list = (0..c.deepstack_visual_indexes.len())
            .map(|k| PatchMerger::load(w, &format!("visual.deepstack_merger_list.{k}"), c, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen3VlVisionModel {
            patch_embed,
            pos_embed,
            blocks,
            merger,
            deepstack_merger_list,
            config: c.clone(),
            side: (c.num_position_embeddings as f64).sqrt() as i64,
        })
    }

    /// `pixel_values` `[N, C*T*P*P]`, `grids` (t, h, w) per image in patches ->
    /// merged features and DeepStack features in the input's unit order.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[i64; 3]]) -> Result<VisionOutput> {
        Ok(vision_stages::run(self, pixel_values, grids, None)?.0)
    }

    /// The DeepStack merger that block `i`'s output feeds.
    fn deepstack_merger(&self, i: usize) -> Option<(usize, &PatchMerger)> {
        let k = self
            .config
            .deepstack_visual_indexes
            .iter()
            .position(|&d| d == i as i64)?;
        Some((k, &self.deepstack_merger_list[k]))
    }

    /// The variables of block `i` alone.
    fn own_block_params(&self, i: usize, out: &mut Params) {
        let b = &self.blocks[i];
        let n = format!("visual.blocks.{i}");
        b.norm1.params(&format!("{n}.norm1"), out);
        b.norm2.params(&format!("{n}.norm2"), out);
        b.attn.params(&format!("{n}.attn"), out);
        b.mlp.params(&format!("{n}.mlp"), out);
    }

    pub fn params(&self, out: &mut Params) {
        self.patch_params(out);
        for i in 0..self.blocks.len() {
            self.own_block_params(i, out);
        }
        self.merge_params(out);
        for (k, d) in self.deepstack_merger_list.iter().enumerate() {
            d.params(&format!("visual.deepstack_merger_list.{k}"), out);
        }
    }
}

impl VisionStages for Qwen3VlVisionModel {
    /// Patch embedding plus the resampled position embeddings.
    fn embed_patches(
        &self,
        pixel_values: &Tensor,
        grids: &[[i64; 3]],
    ) -> Result<(Tensor, BlockContext)> {
        let c = &self.config;
        let m = c.spatial_merge_size;
        check_pixels(pixel_values, grids, c)?;
        let dev = self.pos_embed.device();
        let kind = self.pos_embed.kind();
        let hd = c.hidden_size;
        let patches = self
            .patch_embed
            .forward(&pixel_values.to_device(dev).to_kind(kind));
        let n = patches.size()[0];

        let (idx, wts) = position_taps(grids, self.side, m);
        let idx = Tensor::from_slice(&idx).to_device(dev);
        let wts = Tensor::from_slice(&wts).to_device(dev).view([n, 4, 1]);
        let pos = (self
            .pos_embed
            .index_select(0, &idx)
            .view([n, 4, hd])
            .to_kind(Kind::Float)
            * wts)
            .sum_dim_intlist([1].as_slice(), false, Kind::Float);
        let x = patches + pos.to_kind(kind);

        let hw: Vec<i64> = patch_positions(grids, m).into_iter().flatten().collect();
        let hw = Tensor::from_slice(&hw).reshape([n, 2]).to_device(dev);
        let (cos, sin) = rope::vision_cos_sin(&hw, hd / c.num_heads, c.rope_theta);
        let frames: Vec<i64> = grids
            .iter()
            .flat_map(|g| std::iter::repeat_n(g[1] * g[2], g[0] as usize))
            .collect();
        let ctx = BlockContext {
            cos,
            sin,
            full: SegmentPlan::new(&frames, dev),
            windows: None,
            restore: None,
        };
        Ok((x, ctx))
    }

    fn patch_params(&self, out: &mut Params) {
        self.patch_embed.params("visual.patch_embed.proj", out);
        out.push((
            "visual.pos_embed.weight".into(),
            self.pos_embed.shallow_clone(),
        ));
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn block(&self, i: usize, x: &Tensor, ctx: &BlockContext) -> (Tensor, Option<Tensor>) {
        let blk = &self.blocks[i];
        let x = x + blk
            .attn
            .forward(&blk.norm1.forward(x), &ctx.cos, &ctx.sin, &ctx.full);
        let x = &x + blk.mlp.forward(&blk.norm2.forward(&x));
        let feature = self.deepstack_merger(i).map(|(_, d)| d.forward(&x));
        (x, feature)
    }

    fn block_params(&self, i: usize, out: &mut Params) {
        self.own_block_params(i, out);
        if let Some((k, d)) = self.deepstack_merger(i) {
            d.params(&format!("visual.deepstack_merger_list.{k}"), out);
        }
    }

    fn merge(&self, x: &Tensor, _ctx: &BlockContext) -> Tensor {
        self.merger.forward(x)
    }

    fn merge_params(&self, out: &mut Params) {
        self.merger.params("visual.merger", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_taps_align_corners() {
        // A 3x3 grid resampled to 2x2 patches (one merge unit): the corners of
        // the grid, each with weight 1.
        let (idx, w) = position_taps(&[[1, 2, 2]], 3, 2);
        let picked: Vec<i64> = idx
            .chunks(4)
            .zip(w.chunks(4))
            .map(|(i, w)| i[w.iter().position(|&x| x == 1.0).unwrap()])
            .collect();
        assert_eq!(picked, vec![0, 2, 6, 8]);
        // 5 rows over a 3-row grid: row 1 sits halfway between grid rows 0 and 1.
        let (idx, w) = position_taps(&[[1, 6, 2]], 3, 2);
        // Patch order is block-major: patch 2 is (row 1, col 0).
        assert_eq!(&idx[8..12], &[0, 1, 3, 4]);
        assert!(
            (w[8] - 0.6).abs() < 1e-6 && (w[10] - 0.4).abs() < 1e-6,
            "{w:?}"
        );
    }
}
