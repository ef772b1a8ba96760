//! The Qwen2.5-VL vision tower (`visual.*`): Conv3d patch embedding (a linear
//! map of each flattened patch, since stride = kernel), 2D rotary, blocks with
//! window attention except those in `fullatt_block_indexes`, and the patch
//! merger (RMSNorm, 2x2 merge, MLP with exact GELU).
//!
//! Patches come in the processor's block-major order. The tower reorders
//! merge units window by window so that each window is a contiguous segment,
//! attends within segments (windows, or whole images for full-attention
//! blocks), and restores the original order after the merger.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::config::VisionConfig;
use crate::layers::{GatedMlp, Linear, RmsNorm};
use crate::rope;
use crate::vision_layers::{
    check_pixels, patch_positions, PatchEmbed, SegmentPlan, VisionAttention,
};
use crate::vision_stages::{self, BlockContext, VisionStages};
use crate::weights::{Params, Weights};

pub struct VisionBlock {
    pub norm1: RmsNorm,
    pub norm2: RmsNorm,
    pub attn: VisionAttention,
    pub mlp: GatedMlp,
}

pub struct PatchMerger {
    pub ln_q: RmsNorm,
    pub mlp0: Linear,
    pub mlp2: Linear,
    merged_dim: i64,
}

pub struct VisionTransformer {
    /// `visual.patch_embed.proj.weight` `[hidden, C, T, P, P]`, no bias.
    pub patch_embed: PatchEmbed,
    pub blocks: Vec<VisionBlock>,
    pub merger: PatchMerger,
    pub config: VisionConfig,
}

/// Window order of the merge units (indices into the block-major unit order)
/// and the window lengths in patches.
pub fn window_index(grids: &[[i64; 3]], merge: i64, window_units: i64) -> (Vec<i64>, Vec<i64>) {
    let unit = merge * merge;
    let mut index = Vec::new();
    let mut lengths = Vec::new();
    let mut base = 0;
    for &[t, h, w] in grids {
        let (lh, lw) = (h / merge, w / merge);
        for f in 0..t {
            for wy in 0..(lh + window_units - 1) / window_units {
                for wx in 0..(lw + window_units - 1) / window_units {
                    let mut n = 0;
                    for y in wy * window_units..((wy + 1) * window_units).min(lh) {
                        for x in wx * window_units..((wx + 1) * window_units).min(lw) {
                            index.push(base + f * lh * lw + y * lw + x);
                            n += 1;
                        }
                    }
                    lengths.push(n * unit);
                }
            }
        }
        base += t * lh * lw;
    }
    (index, lengths)
}

impl VisionTransformer {
    pub fn load(w: &mut Weights, c: &VisionConfig) -> Result<Self> {
        let hd = c.hidden_size;
        let patch_embed = PatchEmbed::load(w, "visual.patch_embed.proj", c, false)?;
        let mut blocks = Vec::new();
        for i in 0..c.depth {
            let n = format!("visual.blocks.{i}");
            blocks.push(VisionBlock {
                norm1: RmsNorm::load(w, &format!("{n}.norm1"), hd, 1e-6)?,
                norm2: RmsNorm::load(w, &format!("{n}.norm2"), hd, 1e-6)?,
                attn: VisionAttention::load(w, &format!("{n}.attn"), hd, c.num_heads)?,
                mlp: GatedMlp::load(w, &format!("{n}.mlp"), hd, c.intermediate_size, true)?,
            });
        }
        let merged_dim = hd * c.spatial_merge_size * c.spatial_merge_size;
        let merger = PatchMerger {
            ln_q: RmsNorm::load(w, "visual.merger.ln_q", hd, 1e-6)?,
            mlp0: Linear::load(w, "visual.merger.mlp.0", merged_dim, merged_dim, true)?,
            mlp2: Linear::load(
                w,
                "visual.merger.mlp.2",
                c.out_hidden_size,
                merged_dim,
                true,
            )?,
            merged_dim,
        };
        Ok(VisionTransformer {
            patch_embed,
            blocks,
            merger,
            config: c.clone(),
        })
    }

    /// `pixel_values` `[N, C*T*P*P]`, `grids` (t, h, w) per image in patches ->
    /// merged features `[N / merge^2, out_hidden]` in the input's unit order.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[i64; 3]]) -> Result<Tensor> {
        Ok(vision_stages::run(self, pixel_values, grids, None)?
            .0
            .features)
    }

    pub fn params(&self, out: &mut Params) {
        self.patch_params(out);
        for i in 0..self.blocks.len() {
            self.block_params(i, out);
        }
        self.merge_params(out);
    }

    pub fn device(&self) -> Device {
        self.patch_embed.weight.device()
    }

    pub fn kind(&self) -> Kind {
        self.patch_embed.weight.kind()
    }
}

impl VisionStages for VisionTransformer {
    /// Patch embedding, in window order (each window a contiguous segment).
    fn embed_patches(
        &self,
        pixel_values: &Tensor,
        grids: &[[i64; 3]],
    ) -> Result<(Tensor, BlockContext)> {
        let c = &self.config;
        let m = c.spatial_merge_size;
        let unit = m * m;
        check_pixels(pixel_values, grids, c)?;
        let dev = self.device();
        let x = self
            .patch_embed
            .forward(&pixel_values.to_device(dev).to_kind(self.kind()));
        let n = x.size()[0];
        let hd = c.hidden_size;

        let window_units = c.window_size / m / c.patch_size;
        if window_units <= 0 {
            bail!(
                "vision window_size {} is smaller than one merge unit",
                c.window_size
            );
        }
        let (win_idx, win_lengths) = window_index(grids, m, window_units);
        let win_idx_t = Tensor::from_slice(&win_idx).to_device(dev);
        let permute = |t: &Tensor| -> Tensor {
            let d = t.size()[1];
            t.reshape([n / unit, unit, d])
                .index_select(0, &win_idx_t)
                .reshape([n, d])
        };
        let x = permute(&x);
        let pos: Vec<i64> = patch_positions(grids, m).into_iter().flatten().collect();
        let pos = Tensor::from_slice(&pos).reshape([n, 2]).to_device(dev);
        let (cos, sin) = rope::vision_cos_sin(&pos, hd / c.num_heads, c.rope_theta);
        let (cos, sin) = (permute(&cos), permute(&sin));

        let full_lengths: Vec<i64> = grids
            .iter()
            .flat_map(|g| std::iter::repeat_n(g[1] * g[2], g[0] as usize))
            .collect();
        // Inverse of the window permutation.
        let mut reverse = vec![0i64; win_idx.len()];
        for (pos, &i) in win_idx.iter().enumerate() {
            reverse[i as usize] = pos as i64;
        }
        let ctx = BlockContext {
            cos,
            sin,
            full: SegmentPlan::new(&full_lengths, dev),
            windows: Some(SegmentPlan::new(&win_lengths, dev)),
            restore: Some(Tensor::from_slice(&reverse).to_device(dev)),
        };
        Ok((x, ctx))
    }

    fn patch_params(&self, out: &mut Params) {
        self.patch_embed.params("visual.patch_embed.proj", out);
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn block(&self, i: usize, x: &Tensor, ctx: &BlockContext) -> (Tensor, Option<Tensor>) {
        let blk = &self.blocks[i];
        let segs = match &ctx.windows {
            Some(w) if !self.config.fullatt_block_indexes.contains(&(i as i64)) => w,
            _ => &ctx.full,
        };
        let x = x + blk
            .attn
            .forward(&blk.norm1.forward(x), &ctx.cos, &ctx.sin, segs);
        let x = &x + blk.mlp.forward(&blk.norm2.forward(&x));
        (x, None)
    }

    fn block_params(&self, i: usize, out: &mut Params) {
        let b = &self.blocks[i];
        let n = format!("visual.blocks.{i}");
        b.norm1.params(&format!("{n}.norm1"), out);
        b.norm2.params(&format!("{n}.norm2"), out);
        b.attn.params(&format!("{n}.attn"), out);
        b.mlp.params(&format!("{n}.mlp"), out);
    }

    fn merge(&self, x: &Tensor, ctx: &BlockContext) -> Tensor {
        let merged = self.merger.forward(x);
        match &ctx.restore {
            Some(r) => merged.index_select(0, r),
            None => merged,
        }
    }

    fn merge_params(&self, out: &mut Params) {
        self.merger.ln_q.params("visual.merger.ln_q", out);
        self.merger.mlp0.params("visual.merger.mlp.0", out);
        self.merger.mlp2.params("visual.merger.mlp.2", out);
    }
}

impl PatchMerger {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.ln_q.forward(x).view([-1, self.merged_dim]);
        self.mlp2.forward(&self.mlp0.forward(&h).gelu("none"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_index_covers_every_unit_once() {
        // 20x12 patches, merge 2 -> 10x6 units, windows of 4x4 units -> 3x2 windows.
        let (idx, lens) = window_index(&[[1, 20, 12], [1, 4, 6]], 2, 4);
        assert_eq!(lens, vec![64, 32, 64, 32, 32, 16, 24]);
        let mut sorted = idx.clone();
        sorted.sort();
        assert_eq!(sorted, (0..66).collect::<Vec<_>>());
        // The first window holds units (0..4) x (0..4) of a 6-wide grid.
        assert_eq!(&idx[..5], &[0, 1, 2, 3, 6]);
        // The second image's units follow the first image's 60.
        assert_eq!(idx[60], 60);
    }
}
