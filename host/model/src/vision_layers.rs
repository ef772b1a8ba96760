//! Layers the vision towers share: the patch embedding (a Conv3d whose stride
//! is its kernel, so a linear map of each flattened patch), block-major (h, w)
//! patch positions, and attention within segments of the patch sequence
//! (windows or whole images) with 2D rotary.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

use crate::config::VisionConfig;
use crate::layers::Linear;
use crate::rope;
use crate::weights::{Params, Weights};

/// `{name}.weight` `[hidden, C, T, P, P]` (and `{name}.bias`), applied to
/// `pixel_values` rows `[N, C*T*P*P]`.
pub struct PatchEmbed {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl PatchEmbed {
    pub fn load(w: &mut Weights, name: &str, c: &VisionConfig, bias: bool) -> Result<Self> {
        let weight = w.take(
            &format!("{name}.weight"),
            &[
                c.hidden_size,
                c.in_channels,
                c.temporal_patch_size,
                c.patch_size,
                c.patch_size,
            ],
        )?;
        let bias = if bias {
            Some(w.take(&format!("{name}.bias"), &[c.hidden_size])?)
        } else {
            None
        };
        Ok(PatchEmbed { weight, bias })
    }

    /// `[N, C*T*P*P]` -> `[N, hidden]`.
    pub fn forward(&self, pixels: &Tensor) -> Tensor {
        let hidden = self.weight.size()[0];
        pixels.linear(&self.weight.reshape([hidden, -1]), self.bias.as_ref())
    }

    pub fn params(&self, name: &str, out: &mut Params) {
        out.push((format!("{name}.weight"), self.weight.shallow_clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{name}.bias"), b.shallow_clone()));
        }
    }
}

/// Checks `pixel_values` `[N, C*T*P*P]` against the image grids.
pub fn check_pixels(pixel_values: &Tensor, grids: &[[i64; 3]], c: &VisionConfig) -> Result<()> {
    let m = c.spatial_merge_size;
    let n_expected: i64 = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
    let size = pixel_values.size();
    if size.len() != 2 || size[1] != c.patch_dim() {
        bail!(
            "pixel_values must be [N, {}] (C*T*P*P), got {size:?}",
            c.patch_dim()
        );
    }
    if size[0] != n_expected {
        bail!(
            "pixel_values has {} patches but image_grid_thw {grids:?} describes {n_expected}",
            size[0]
        );
    }
    for g in grids {
        if g[1] % m != 0 || g[2] % m != 0 || g.iter().any(|&x| x <= 0) {
            bail!("image grid {g:?} must be positive with h and w multiples of spatial_merge_size {m}");
        }
    }
    Ok(())
}

/// `qkv` and `proj` with biases; attention within the segments of a [`SegmentPlan`].
pub struct VisionAttention {
    pub qkv: Linear,
    pub proj: Linear,
    num_heads: i64,
    head_dim: i64,
}

impl VisionAttention {
    pub fn load(w: &mut Weights, name: &str, hidden: i64, num_heads: i64) -> Result<Self> {
        Ok(VisionAttention {
            qkv: Linear::load(w, &format!("{name}.qkv"), 3 * hidden, hidden, true)?,
            proj: Linear::load(w, &format!("{name}.proj"), hidden, hidden, true)?,
            num_heads,
            head_dim: hidden / num_heads,
        })
    }

    /// `x` `[N, hidden]`, cos/sin `[N, head_dim]`, attention within each segment.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, plan: &SegmentPlan) -> Tensor {
        let n = x.size()[0];
        let (nh, hd) = (self.num_heads, self.head_dim);
        let qkv = self.qkv.forward(x).reshape([n, 3, nh, hd]);
        let (q, k) = rope::apply_vision(&qkv.select(1, 0), &qkv.select(1, 1), cos, sin);
        let v = qkv.select(1, 2);
        let mut outs = Vec::new();
        for (count, len, idx) in &plan.groups {
            let pick = |t: &Tensor| {
                t.index_select(0, idx)
                    .reshape([*count, *len, nh, hd])
                    .transpose(1, 2)
            };
            let o = Tensor::scaled_dot_product_attention(
                &pick(&q),
                &pick(&k),
                &pick(&v),
                None::<&Tensor>,
                0.0,
                false,
                None,
                false,
            );
            outs.push(o.transpose(1, 2).reshape([count * len, nh * hd]));
        }
        let o = Tensor::cat(&outs, 0).index_select(0, &plan.inverse);
        self.proj.forward(&o)
    }

    pub fn params(&self, name: &str, out: &mut Params) {
        self.qkv.params(&format!("{name}.qkv"), out);
        self.proj.params(&format!("{name}.proj"), out);
    }
}

/// How attention splits a sequence into independent segments (windows or
/// whole images): segments of equal length are gathered into one batch so
/// that each block runs one SDPA call per distinct length, then scattered back.
pub struct SegmentPlan {
    /// (number of segments, segment length, gather indices `[count * len]`).
    groups: Vec<(i64, i64, Tensor)>,
    /// Positions of the grouped rows back in sequence order.
    inverse: Tensor,
}

impl SegmentPlan {
    pub fn new(lengths: &[i64], device: Device) -> Self {
        let mut by_len: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut start = 0;
        for &len in lengths {
            if len > 0 {
                by_len.entry(len).or_default().push(start);
            }
            start += len;
        }
        let mut groups = Vec::new();
        let mut order = Vec::new();
        for (len, starts) in by_len {
            let idx: Vec<i64> = starts.iter().flat_map(|&st| st..st + len).collect();
            groups.push((
                starts.len() as i64,
                len,
                Tensor::from_slice(&idx).to_device(device),
            ));
            order.extend(idx);
        }
        let mut inverse = vec![0i64; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i as usize] = pos as i64;
        }
        SegmentPlan {
            groups,
            inverse: Tensor::from_slice(&inverse).to_device(device),
        }
    }
}

/// Per-patch (h, w) rotary positions in the block-major patch order.
pub fn patch_positions(grids: &[[i64; 3]], merge: i64) -> Vec<[i64; 2]> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for i in 0..merge {
                        for j in 0..merge {
                            out.push([bh * merge + i, bw * merge + j]);
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_positions_are_block_major() {
        let p = patch_positions(&[[1, 2, 4]], 2);
        assert_eq!(
            p,
            vec![
                [0, 0],
                [0, 1],
                [1, 0],
                [1, 1],
                [0, 2],
                [0, 3],
                [1, 2],
                [1, 3]
            ]
        );
    }
}
