//! Qwen2.5-VL's multimodal rotary positions (`get_rope_index`) for a
//! left-padded batch: text tokens count up on all three axes; the tokens of an
//! image get (t, h, w) positions on its merged-patch grid, offset by the
//! position where the image starts; text after an image resumes at that start
//! plus max(h, w) of the merged grid.
//!
//! Images only: a still image's temporal positions are not scaled, so
//! `second_per_grid_ts` (a video setting) plays no part here.

use anyhow::{bail, Result};
use tch::Tensor;

/// Positions of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeIndex {
    /// `[3, B, L]` row-major (axis, sample, token); 0 at padding, as transformers leaves it.
    pub position_ids: Vec<i64>,
    /// `[B]`: max position + 1 - number of real tokens; the position of decoded
    /// token number `n` (0-based, after the prompt) is `prompt_len + n + delta`.
    pub rope_deltas: Vec<i64>,
    pub batch: usize,
    pub seq_len: usize,
}

impl RopeIndex {
    /// `([3, B, L], [B])` int64 tensors on the CPU.
    pub fn to_tensors(&self) -> (Tensor, Tensor) {
        let pos = Tensor::from_slice(&self.position_ids).reshape([
            3,
            self.batch as i64,
            self.seq_len as i64,
        ]);
        let deltas = Tensor::from_slice(&self.rope_deltas);
        (pos, deltas)
    }
}

/// `input_ids` and `attention_mask`: B rows of equal length L.
/// `image_grid_thw[b]`: the (t, h, w) patch grids of sample b's images, in order.
pub fn get_rope_index(
    input_ids: &[Vec<i64>],
    attention_mask: &[Vec<i64>],
    image_grid_thw: &[Vec<[i64; 3]>],
    image_token_id: i64,
    spatial_merge_size: i64,
) -> Result<RopeIndex> {
    let batch = input_ids.len();
    let seq_len = input_ids.first().map_or(0, Vec::len);
    if attention_mask.len() != batch || image_grid_thw.len() != batch {
        bail!(
            "get_rope_index: {batch} rows of ids, {} of mask, {} of image grids",
            attention_mask.len(),
            image_grid_thw.len()
        );
    }
    if spatial_merge_size <= 0 {
        bail!("spatial_merge_size must be positive, got {spatial_merge_size}");
    }
    let mut position_ids = vec![0i64; 3 * batch * seq_len];
    let mut rope_deltas = Vec::with_capacity(batch);
    for b in 0..batch {
        let (ids, mask) = (&input_ids[b], &attention_mask[b]);
        if ids.len() != seq_len || mask.len() != seq_len {
            bail!(
                "sample {b}: {} ids and {} mask values, expected {seq_len}",
                ids.len(),
                mask.len()
            );
        }
        let real: Vec<usize> = (0..seq_len).filter(|&i| mask[i] != 0).collect();
        let mut pos: Vec<[i64; 3]> = Vec::with_capacity(real.len());
        let mut grids = image_grid_thw[b].iter();
        let mut current = 0i64;
        let mut i = 0;
        while i < real.len() {
            if ids[real[i]] != image_token_id {
                pos.push([current; 3]);
                current += 1;
                i += 1;
                continue;
            }
            // One image: as many tokens as its merged grid has cells.
            let Some(&[t, h, w]) = grids.next() else {
                bail!(
                    "sample {b}: more image tokens than the {} image grids given",
                    image_grid_thw[b].len()
                );
            };
            let (lh, lw) = (h / spatial_merge_size, w / spatial_merge_size);
            let n = (t * lh * lw) as usize;
            let run = real[i..]
                .iter()
                .take_while(|&&j| ids[j] == image_token_id)
                .count();
            if run < n {
                bail!("sample {b}: an image with grid [{t}, {h}, {w}] needs {n} image tokens, found {run}");
            }
            for tt in 0..t {
                for hh in 0..lh {
                    for ww in 0..lw {
                        pos.push([current + tt, current + hh, current + ww]);
                    }
                }
            }
            current += lh.max(lw);
            i += n;
        }
        if grids.next().is_some() {
            bail!(
                "sample {b}: {} image grids but fewer images in the tokens",
                image_grid_thw[b].len()
            );
        }
        let plane = batch * seq_len;
        for (k, &j) in real.iter().enumerate() {
            for (axis, &p) in pos[k].iter().enumerate() {
                position_ids[axis * plane + b * seq_len + j] = p;
            }
        }
        let max = pos
            .iter()
            .flat_map(|p| p.iter().copied())
            .max()
            .unwrap_or(-1);
        rope_deltas.push(max + 1 - real.len() as i64);
    }
    Ok(RopeIndex {
        position_ids,
        rope_deltas,
        batch,
        seq_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_then_image_then_text_with_left_padding() {
        const IMG: i64 = 9;
        // pad, 2 text, 4 image tokens (grid 1x4x4 merged 2 -> 2x2), 2 text
        let ids = vec![vec![0, 5, 5, IMG, IMG, IMG, IMG, 6, 6]];
        let mask = vec![vec![0, 1, 1, 1, 1, 1, 1, 1, 1]];
        let r = get_rope_index(&ids, &mask, &[vec![[1, 4, 4]]], IMG, 2).unwrap();
        assert_eq!(&r.position_ids[0..9], &[0, 0, 1, 2, 2, 2, 2, 4, 5]);
        assert_eq!(&r.position_ids[9..18], &[0, 0, 1, 2, 2, 3, 3, 4, 5]);
        assert_eq!(&r.position_ids[18..27], &[0, 0, 1, 2, 3, 2, 3, 4, 5]);
        // max 5 + 1 - 8 real tokens
        assert_eq!(r.rope_deltas, vec![-2]);
    }

    #[test]
    fn token_grid_mismatch_is_an_error() {
        let ids = vec![vec![1, 9, 9, 2]];
        let mask = vec![vec![1; 4]];
        assert!(get_rope_index(&ids, &mask, &[vec![[1, 4, 4]]], 9, 2).is_err());
        assert!(get_rope_index(&ids, &mask, &[vec![]], 9, 2).is_err());
    }
}
