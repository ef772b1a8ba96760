//! What a decoder-only model provides to be a [`crate::lm::CausalLm`]:
//! [`DecoderLm`] (its inputs to hidden states, its decoder and output
//! projection), [`Decoder`], and for a vision-language model [`VisionLm`];
//! and the pieces the passes share (positions, image inputs, how responses
//! continue shared prompts, DeepStack features). The passes themselves are
//! in `passes` (prefill, decode step, token statistics) and `recompute`
//! (the checkpointed loss gradients).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::layers::LayerKv;
use crate::lm::{DecodeAttention, Entropy, ForwardInputs, ImageTokens};
use crate::token_stats::chunked_token_stats;
use crate::vision_stages::{VisionOutput, VisionStages};
use crate::weights::{Params, Weights};

mod passes;
mod recompute;

/// The text decoder of a model: token embeddings and the layer stack.
pub trait Decoder {
    /// Token embeddings `[B, L, H]` of `input_ids` `[B, L]`.
    fn embed(&self, input_ids: &Tensor) -> Tensor;

    /// Runs the layers over `embeds` `[B, L, H]` at rotary `positions`
    /// (`[B, L]`, or `[3, B, L]` for M-RoPE). `key_mask` `[B, T]` covers the
    /// cached and the new tokens (T = cached + L). With `cache`, the per-layer
    /// keys/values are read from it (if non-empty) and replaced by the
    /// extended ones, written into `buffers` (see [`KvCache::buffers`]) when
    /// they have room. Returns the final-norm hidden states `[B, L, H]`.
    fn forward_embeds(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        cache: Option<&mut Vec<LayerKv>>,
        buffers: &[LayerKv],
    ) -> Result<Tensor>;

    fn num_layers(&self) -> usize;

    /// Rotary cos/sin of `positions` (as in [`Decoder::forward_embeds`]) in `kind`.
    fn rotary(&self, positions: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)>;

    /// Layer `i` over `h` `[B, L, H]` with the bool attention `mask`
    /// `[B, 1, L, T]` over `past` and the new keys/values; returns its output
    /// and the keys/values of all T positions.
    fn layer(
        &self,
        i: usize,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        past: Option<&LayerKv>,
    ) -> (Tensor, LayerKv);

    /// Layer `i`'s own variables (with adapters, if it has any).
    fn layer_params(&self, i: usize, out: &mut Params);

    fn final_norm(&self, h: &Tensor) -> Tensor;

    fn final_norm_params(&self, out: &mut Params);

    /// The token embeddings.
    fn embedding_params(&self, out: &mut Params);

    /// [`Decoder::forward_embeds`] over [`DecoderInputs`] (their DeepStack
    /// features included), without a cache buffer.
    fn forward_inputs(
        &self,
        x: &DecoderInputs,
        key_mask: &Tensor,
        cache: Option<&mut Vec<LayerKv>>,
    ) -> Result<Tensor>;

    /// One new token per row (`embeds` `[B, 1, H]`) at rotary `positions`
    /// (`[B, 1]` or `[3, B, 1]`), each layer's attention done by
    /// `attention`. Returns the final-norm hidden states `[B, 1, H]`.
    fn decode_with(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        attention: &mut dyn DecodeAttention,
    ) -> Result<Tensor>;
}

/// What the decoder layers of a model run over.
pub struct DecoderInputs {
    /// `[B, L, H]`, image features in place of the image tokens.
    pub embeds: Tensor,
    /// Rotary positions `[B, L]` or `[3, B, L]`.
    pub positions: Tensor,
    /// `[B, L]` bool image tokens, with the DeepStack features `[N, H]` the
    /// first layers add to them (Qwen3-VL with images).
    pub deepstack: Option<(Tensor, Vec<Tensor>)>,
}

impl DecoderInputs {
    pub fn text(embeds: Tensor, positions: Tensor) -> DecoderInputs {
        DecoderInputs {
            embeds,
            positions,
            deepstack: None,
        }
    }

    pub fn deepstack(&self) -> Option<Deepstack<'_>> {
        self.deepstack.as_ref().map(|(m, f)| Deepstack {
            image_mask: m,
            features: f,
        })
    }
}

/// What a model provides to be a [`CausalLm`].
pub trait DecoderLm {
    /// Final-norm hidden states `[B, L, H]` of `inputs` and the rotary
    /// positions they ran at (a vision-language model runs its vision tower
    /// here). With `cache`, it receives every layer's keys/values.
    fn hidden(
        &self,
        inputs: &ForwardInputs,
        cache: Option<&mut Vec<LayerKv>>,
    ) -> Result<(Tensor, Tensor)> {
        let x = self.embed_inputs(inputs)?;
        let h = self
            .decoder()
            .forward_inputs(&x, inputs.attention_mask, cache)?;
        Ok((h, x.positions))
    }

    /// The decoder's inputs: token embeddings with the image features in
    /// place, rotary positions and DeepStack features (runs the vision tower).
    fn embed_inputs(&self, inputs: &ForwardInputs) -> Result<DecoderInputs>;

    fn decoder(&self) -> &dyn Decoder;

    /// The output projection `[V, H]`.
    fn lm_head(&self) -> &Tensor;

    /// Whether rotary positions are `[3, B, L]` (M-RoPE) rather than `[B, L]`.
    fn mrope(&self) -> bool;

    fn stop_token_ids(&self) -> &[i64];

    /// How images appear in the prompt (`None`: text only).
    fn image_tokens(&self) -> Option<ImageTokens> {
        None
    }

    /// The vision tower and how its features enter the embeddings (`None`:
    /// text only); activation checkpointing runs the tower block by block.
    fn vision_lm(&self) -> Option<&dyn VisionLm> {
        None
    }
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

/// Features added to the hidden states of the image tokens after the first
/// decoder layers (Qwen3-VL's DeepStack).
pub struct Deepstack<'a> {
    /// `[B, L]` bool: the image tokens.
    pub image_mask: &'a Tensor,
    /// Per layer from the first, `[N_image_tokens, H]` in token order.
    pub features: &'a [Tensor],
}

/// `h` `[B, L, H]` plus the DeepStack `features` `[N, H]` on the image
/// tokens (`image_mask` `[B, L, 1]`), in token order.
pub fn add_deepstack(h: &Tensor, image_mask: &Tensor, features: &Tensor) -> Tensor {
    h + h
        .zeros_like()
        .masked_scatter(image_mask, &features.to_kind(h.kind()))
}

/// How responses `[B, Lr]` continue their shared prompts `[G, Lp]`: each
/// row's prompt, the keys every response position sees, the rotary positions.
pub(crate) struct ResponseLayout {
    /// `[B]` int64: the prompt of each response.
    pub group: Tensor,
    /// `[B, Lp + Lr]`: the prompt's keys, then the response's.
    pub key_mask: Tensor,
    /// `[B, Lr]` (or `[3, B, Lr]` under M-RoPE).
    pub positions: Tensor,
}

impl ResponseLayout {
    pub fn new(
        mrope: bool,
        prompt_positions: &Tensor,
        prompt_mask: &Tensor,
        group: &Tensor,
        response_mask: &Tensor,
    ) -> ResponseLayout {
        let lr = response_mask.size()[1];
        let group = group.to_kind(Kind::Int64);
        let key_mask = Tensor::cat(
            &[
                prompt_mask.to_kind(Kind::Int64).index_select(0, &group),
                response_mask.to_kind(Kind::Int64),
            ],
            1,
        );
        let next = next_positions(prompt_positions, prompt_mask).index_select(0, &group);
        let pos = next.unsqueeze(1)
            + Tensor::arange(lr, (Kind::Int64, response_mask.device())).unsqueeze(0); // [B, Lr]
        ResponseLayout {
            group,
            key_mask,
            positions: text_positions(mrope, pos),
        }
    }

    /// A prompt layer's keys/values, one copy per response.
    pub fn share(&self, (k, v): &LayerKv) -> LayerKv {
        (
            k.index_select(0, &self.group),
            v.index_select(0, &self.group),
        )
    }

    /// Log-probs (and entropies) `[B, Lr]` of `responses` from the final-norm
    /// hidden states of the prompts `[G, Lp, H]` and the responses `[B, Lr, H]`.
    pub fn token_stats(
        &self,
        prompt_hidden: &Tensor,
        response_hidden: &Tensor,
        lm_head: &Tensor,
        responses: &Tensor,
        entropy: Entropy,
        temperature: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (lp, lr) = (prompt_hidden.size()[1], responses.size()[1]);
        // Left padding puts every prompt's last token in the last column; its
        // state predicts response token 0, response position j predicts j + 1.
        let last = prompt_hidden
            .narrow(1, lp - 1, 1)
            .index_select(0, &self.group);
        let hidden = Tensor::cat(&[last, response_hidden.narrow(1, 0, lr - 1)], 1);
        chunked_token_stats(&hidden, lm_head, responses, entropy, temperature)
    }
}

/// Rotary positions of text tokens `[B, L]` as the model takes them: the
/// same on all three axes under M-RoPE.
pub(crate) fn text_positions(mrope: bool, pos: Tensor) -> Tensor {
    if mrope {
        let s = pos.size();
        pos.unsqueeze(0).expand([3, s[0], s[1]], false)
    } else {
        pos
    }
}

/// `pixel_values` and `image_grid_thw` of `inputs` (`None`: no images).
pub fn image_inputs<'a>(inputs: &ForwardInputs<'a>) -> Result<Option<(&'a Tensor, &'a Tensor)>> {
    match (inputs.pixel_values, inputs.image_grid_thw) {
        (Some(p), Some(g)) => Ok(Some((p, g))),
        (None, None) => Ok(None),
        _ => bail!("pixel_values and image_grid_thw must be given together"),
    }
}

/// A vision-language model's decoder inputs without DeepStack: `decoder`'s
/// token embeddings of `inputs` with `features` in place of the
/// `image_token_id` tokens, and the M-RoPE positions.
pub fn vl_inputs(
    decoder: &dyn Decoder,
    inputs: &ForwardInputs,
    image_token_id: i64,
    features: Option<&Tensor>,
) -> Result<DecoderInputs> {
    check_ids(inputs.input_ids, inputs.attention_mask)?;
    let embeds = scatter_image_features(
        decoder.embed(inputs.input_ids),
        inputs.input_ids,
        image_token_id,
        features,
    )?;
    Ok(DecoderInputs::text(embeds, mrope_positions(inputs)?))
}

/// Token embeddings `embeds` `[B, L, H]` with the image features `[N, H]`
/// scattered, in order, into the positions of `image_token_id` in `input_ids`.
pub fn scatter_image_features(
    embeds: Tensor,
    input_ids: &Tensor,
    image_token_id: i64,
    image_features: Option<&Tensor>,
) -> Result<Tensor> {
    let mask = input_ids.eq(image_token_id);
    let n_tokens = mask.sum(Kind::Int64).int64_value(&[]);
    match image_features {
        None if n_tokens > 0 => bail!(
            "input_ids contain {n_tokens} <|image_pad|> token(s) (id {image_token_id}) but no images were given"
        ),
        None => Ok(embeds),
        Some(f) => {
            let n_feat = f.size()[0];
            if n_feat != n_tokens {
                bail!(
                    "input_ids contain {n_tokens} <|image_pad|> token(s) (id {image_token_id}) but the images \
                     give {n_feat} merged patches"
                );
            }
            Ok(embeds.masked_scatter(&mask.unsqueeze(-1), &f.to_kind(embeds.kind())))
        }
    }
}

/// M-RoPE positions `[3, B, L]` of a vision-language model's inputs: as given
/// (`[3, B, L]`, or `[B, L]` broadcast to all axes), or for text-only inputs
/// derived from the mask.
pub fn mrope_positions(inputs: &ForwardInputs) -> Result<Tensor> {
    let b = inputs.input_ids.size()[0];
    let l = inputs.input_ids.size()[1];
    match inputs.position_ids {
        Some(p) if p.size() == [3, b, l] => Ok(p.shallow_clone()),
        Some(p) if p.size() == [b, l] => Ok(p.unsqueeze(0).expand([3, b, l], false)),
        Some(p) => bail!(
            "position_ids must be [3, B, L] = [3, {b}, {l}], got {:?}",
            p.size()
        ),
        None if inputs.pixel_values.is_some() => {
            bail!("inputs with images need the processor's M-RoPE position_ids [3, B, L]")
        }
        None => {
            let p = positions_from_mask(inputs.attention_mask);
            Ok(p.unsqueeze(0).expand([3, b, l], false))
        }
    }
}

/// Rotary positions `[B, L]` of a text model's inputs: as given, or derived
/// from the mask. `model` names the model in errors.
pub fn text_positions_given(inputs: &ForwardInputs, model: &str) -> Result<Tensor> {
    if inputs.pixel_values.is_some() {
        bail!("{model} is a text-only model but the inputs carry images");
    }
    match inputs.position_ids {
        Some(p) if p.dim() == 2 => Ok(p.shallow_clone()),
        Some(p) => bail!("{model} expects [B, L] position ids, got {:?}", p.size()),
        None => Ok(positions_from_mask(inputs.attention_mask)),
    }
}

/// Positions transformers' generate uses for a left-padded batch: cumsum of the
/// mask minus one (padding gets 1, never attended to).
pub fn positions_from_mask(mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Int64);
    (m.cumsum(-1, Kind::Int64) - 1).masked_fill(&m.eq(0), 1)
}

/// Per sequence, the position the next token gets: the largest position of a
/// real token plus one. `positions` `[B, L]` or `[3, B, L]`, `mask` `[B, L]`.
pub fn next_positions(positions: &Tensor, mask: &Tensor) -> Tensor {
    let pad = mask.eq(0);
    if positions.dim() == 3 {
        let p = positions.masked_fill(&pad.unsqueeze(0), -1);
        p.amax([0, 2].as_slice(), false) + 1
    } else {
        positions.masked_fill(&pad, -1).amax([1].as_slice(), false) + 1
    }
}

/// The output projection `lm_head.weight` `[vocab, hidden]`: the embedding
/// matrix itself when the embeddings are tied.
pub fn load_lm_head(
    w: &mut Weights,
    tie_word_embeddings: bool,
    embed_tokens: &Tensor,
) -> Result<Tensor> {
    let shape = embed_tokens.size();
    if tie_word_embeddings {
        // Some tied checkpoints still carry a copy; it must equal the embedding
        // shape, but the tie wins (as in transformers).
        if w.contains("lm_head.weight") {
            let _ = w.take("lm_head.weight", &shape)?;
        }
        Ok(embed_tokens.shallow_clone())
    } else {
        w.take("lm_head.weight", &shape)
    }
}

/// `input_ids` and `attention_mask` must both be `[B, L]`.
pub fn check_ids(ids: &Tensor, mask: &Tensor) -> Result<()> {
    if ids.dim() != 2 || ids.size() != mask.size() {
        bail!(
            "input_ids {:?} and attention_mask {:?} must both be [B, L]",
            ids.size(),
            mask.size()
        );
    }
    Ok(())
}
