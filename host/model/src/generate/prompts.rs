//! The prompts of a generation taken out of their left-padded batch, one
//! set at a time, for the prefills the engine runs as slots free up.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::config::PromptBatch;
use crate::lm::{ForwardInputs, ImageTokens};

/// A batch of prompts the engine prefills from, with each prompt's length
/// and images.
pub struct PromptSet<'a> {
    batch: PromptBatch<'a>,
    /// Real tokens of each prompt.
    pub lens: Vec<usize>,
    /// Per prompt, its images as a range of `image_grid_thw` rows and of
    /// `pixel_values` rows (patches); `None` when the batch has no images or
    /// their split over the prompts is unknown.
    images: Option<Vec<(std::ops::Range<i64>, std::ops::Range<i64>)>>,
}

/// Inputs of some of the prompts, owning their tensors.
pub struct PromptInputs {
    ids: Tensor,
    mask: Tensor,
    positions: Option<Tensor>,
    pixels: Option<Tensor>,
    grid: Option<Tensor>,
}

impl PromptInputs {
    pub fn as_inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            input_ids: &self.ids,
            attention_mask: &self.mask,
            position_ids: self.positions.as_ref(),
            pixel_values: self.pixels.as_ref(),
            image_grid_thw: self.grid.as_ref(),
        }
    }
}

impl<'a> PromptSet<'a> {
    /// `image_tokens`: how the model marks images, to find each prompt's
    /// images when the batch does not list them.
    pub fn new(batch: PromptBatch<'a>, image_tokens: Option<ImageTokens>) -> Result<Self> {
        let inputs = &batch.inputs;
        let b = inputs.input_ids.size()[0];
        if inputs.input_ids.dim() != 2 || inputs.attention_mask.size() != inputs.input_ids.size() {
            bail!(
                "input_ids {:?} and attention_mask {:?} must both be [B, L]",
                inputs.input_ids.size(),
                inputs.attention_mask.size()
            );
        }
        let lens: Vec<usize> = Vec::<i64>::try_from(inputs.attention_mask.ne(0).sum_dim_intlist(
            [1].as_slice(),
            false,
            Kind::Int64,
        ))
        .context("reading the prompt lengths")?
        .into_iter()
        .map(|n| n as usize)
        .collect();
        if let Some(k) = batch.keys {
            if k.len() as i64 != b {
                bail!("{} prompt keys for {b} prompts", k.len());
            }
        }
        let images = match (inputs.image_grid_thw, batch.images_per_prompt, image_tokens) {
            (Some(grid), Some(per), _) => Some(image_ranges(grid, per, b)?),
            (Some(grid), None, Some(t)) => {
                let per = images_per_prompt(inputs.input_ids, grid, t)?;
                Some(image_ranges(grid, &per, b)?)
            }
            _ => None,
        };
        Ok(PromptSet {
            batch,
            lens,
            images,
        })
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The key of prompt `i`'s random streams.
    pub fn key(&self, i: usize) -> u64 {
        self.batch.keys.map_or(i as u64, |k| k[i])
    }

    /// The inputs of prompts `sel` (ascending), left-padded to the longest of them.
    pub fn inputs(&self, sel: &[usize]) -> Result<PromptInputs> {
        let inputs = &self.batch.inputs;
        let (b, l) = (inputs.input_ids.size()[0], inputs.input_ids.size()[1]);
        let longest = sel.iter().map(|&i| self.lens[i]).max().unwrap_or(0).max(1) as i64;
        let all = sel.len() as i64 == b && sel.iter().enumerate().all(|(k, &i)| k == i);
        let idx = Tensor::from_slice(&sel.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(inputs.input_ids.device());
        let rows = |t: &Tensor, dim: i64| -> Tensor {
            let t = if all {
                t.shallow_clone()
            } else {
                t.index_select(dim, &idx)
            };
            t.narrow(-1, l - longest, longest)
        };
        let positions = inputs.position_ids.map(|p| match p.dim() {
            3 => rows(p, 1),
            _ => rows(p, 0),
        });
        let (pixels, grid) = match (inputs.pixel_values, inputs.image_grid_thw) {
            (Some(p), Some(g)) if all => (Some(p.shallow_clone()), Some(g.shallow_clone())),
            (Some(p), Some(g)) => {
                let Some(ranges) = &self.images else {
                    bail!(
                        "prompts with images are prefilled a few at a time here (a KV budget or \
                         several workers), which needs the number of images of each prompt"
                    );
                };
                let mut pix = Vec::new();
                let mut grids = Vec::new();
                for &i in sel {
                    let (im, pa) = &ranges[i];
                    if im.end > im.start {
                        grids.push(g.narrow(0, im.start, im.end - im.start));
                        pix.push(p.narrow(0, pa.start, pa.end - pa.start));
                    }
                }
                if grids.is_empty() {
                    (None, None)
                } else {
                    (Some(Tensor::cat(&pix, 0)), Some(Tensor::cat(&grids, 0)))
                }
            }
            _ => (None, None),
        };
        Ok(PromptInputs {
            ids: rows(inputs.input_ids, 0),
            mask: rows(inputs.attention_mask, 0),
            positions,
            pixels,
            grid,
        })
    }
}

/// How many images each prompt of `input_ids` `[B, L]` holds, from its
/// image tokens and the images' sizes in `image_grid_thw` (in batch order).
fn images_per_prompt(input_ids: &Tensor, grid: &Tensor, t: ImageTokens) -> Result<Vec<usize>> {
    let tokens = Vec::<i64>::try_from(input_ids.eq(t.id).sum_dim_intlist(
        [1].as_slice(),
        false,
        Kind::Int64,
    ))
    .context("counting image tokens")?;
    let g = Vec::<i64>::try_from(grid.to_kind(Kind::Int64).flatten(0, -1))
        .context("reading image_grid_thw")?;
    let mut sizes = g
        .chunks(3)
        .map(|c| c[0] * c[1] * c[2] / t.patches_per_token.max(1));
    let mut out = Vec::with_capacity(tokens.len());
    for (i, &want) in tokens.iter().enumerate() {
        let (mut got, mut k) = (0, 0);
        while got < want {
            let Some(n) = sizes.next() else {
                bail!("prompt {i} has {want} image tokens but image_grid_thw runs out of images");
            };
            got += n;
            k += 1;
        }
        if got != want {
            bail!("prompt {i} has {want} image tokens; its images in image_grid_thw make {got}");
        }
        out.push(k);
    }
    if sizes.next().is_some() {
        bail!("image_grid_thw has more images than the prompts' image tokens");
    }
    Ok(out)
}

/// Per prompt, its rows of `image_grid_thw` and of `pixel_values`.
#[allow(clippy::type_complexity)]
fn image_ranges(
    grid: &Tensor,
    per_prompt: &[usize],
    prompts: i64,
) -> Result<Vec<(std::ops::Range<i64>, std::ops::Range<i64>)>> {
    if per_prompt.len() as i64 != prompts {
        bail!(
            "images_per_prompt has {} entries for {prompts} prompts",
            per_prompt.len()
        );
    }
    let g = Vec::<i64>::try_from(grid.to_kind(Kind::Int64).flatten(0, -1))
        .context("reading image_grid_thw")?;
    let images = (g.len() / 3) as i64;
    if per_prompt.iter().sum::<usize>() as i64 != images {
        bail!(
            "images_per_prompt counts {} images, image_grid_thw has {images}",
            per_prompt.iter().sum::<usize>()
        );
    }
    let mut out = Vec::with_capacity(per_prompt.len());
    let (mut image, mut patch) = (0i64, 0i64);
    for &k in per_prompt {
        let patches: i64 = (image..image + k as i64)
            .map(|i| g[3 * i as usize] * g[3 * i as usize + 1] * g[3 * i as usize + 2])
            .sum();
        out.push((image..image + k as i64, patch..patch + patches));
        image += k as i64;
        patch += patches;
    }
    Ok(out)
}
