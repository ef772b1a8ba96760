//! [`CausalLm`] for every [`DecoderLm`]: prefill, one decode step with the
//! KV cache, token statistics of whole sequences, and token statistics of
//! responses over shared prompts (with their loss gradients, checkpointed,
//! in `recompute`).

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::recompute;
use super::{next_positions, text_positions, DecoderLm, ResponseLayout};
use crate::layers::LayerKv;
use crate::lm::{
    CausalLm, DecodeAttention, Entropy, ForwardInputs, ImageTokens, KvCache, ResponseLoss,
    ResponseRows,
};
use crate::token_stats::chunked_token_stats;

impl<T: DecoderLm> CausalLm for T {
    fn forward(&self, inputs: &ForwardInputs) -> Result<Tensor> {
        let (h, _) = self.hidden(inputs, None)?;
        Ok(h.linear(self.lm_head(), None::<&Tensor>))
    }

    fn prefill(&self, inputs: &ForwardInputs) -> Result<(Tensor, KvCache)> {
        let mut layers = Vec::new();
        let (h, positions) = self.hidden(inputs, Some(&mut layers))?;
        let l = h.size()[1];
        let logits = h
            .narrow(1, l - 1, 1)
            .squeeze_dim(1)
            .linear(self.lm_head(), None::<&Tensor>);
        let mask = inputs.attention_mask;
        let cache = KvCache {
            layers,
            attention_mask: mask.to_kind(Kind::Int64),
            next_position: next_positions(&positions, mask),
            buffers: Vec::new(),
        };
        Ok((logits, cache))
    }

    fn decode_step(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let b = cache.attention_mask.size()[0];
        if ids.size() != [b, 1] {
            bail!(
                "decode_step expects ids [B, 1] = [{b}, 1], got {:?}",
                ids.size()
            );
        }
        let positions = text_positions(self.mrope(), cache.next_position.unsqueeze(1));
        let mask = Tensor::cat(
            &[
                &cache.attention_mask,
                &cache.attention_mask.ones_like().narrow(1, 0, 1),
            ],
            1,
        );
        let decoder = self.decoder();
        let h = decoder
            .forward_embeds(
                &decoder.embed(ids),
                &positions,
                &mask,
                Some(&mut cache.layers),
                &cache.buffers,
            )
            .context("decode step")?;
        cache.attention_mask = mask;
        cache.next_position = &cache.next_position + 1;
        Ok(h.squeeze_dim(1).linear(self.lm_head(), None::<&Tensor>))
    }

    fn decode_with(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention: &mut dyn DecodeAttention,
    ) -> Result<Tensor> {
        let b = ids.size()[0];
        if ids.size() != [b, 1] || positions.size() != [b] {
            bail!(
                "decode_with expects ids [B, 1] and positions [B], got {:?} and {:?}",
                ids.size(),
                positions.size()
            );
        }
        let decoder = self.decoder();
        let h = decoder
            .decode_with(
                &decoder.embed(ids),
                &text_positions(self.mrope(), positions.unsqueeze(1)),
                attention,
            )
            .context("decode step")?;
        Ok(h.squeeze_dim(1).linear(self.lm_head(), None::<&Tensor>))
    }

    fn token_stats(
        &self,
        inputs: &ForwardInputs,
        targets: &Tensor,
        entropy: Entropy,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (h, _) = self.hidden(inputs, None)?;
        chunked_token_stats(&h, self.lm_head(), targets, entropy, 1.0)
    }

    /// The prompts (and their images) run once per prompt, not per response.
    fn response_token_stats(
        &self,
        prompts: &ForwardInputs,
        group: &Tensor,
        responses: &Tensor,
        response_mask: &Tensor,
        entropy: Entropy,
        temperature: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        check_responses(group, responses, response_mask)?;
        let mut prompt_layers = Vec::new();
        let (prompt_hidden, prompt_positions) = self.hidden(prompts, Some(&mut prompt_layers))?;
        let r = ResponseLayout::new(
            self.mrope(),
            &prompt_positions,
            prompts.attention_mask,
            group,
            response_mask,
        );
        // index_select's backward sums the gradients of every copy into the prompt.
        let mut layers: Vec<LayerKv> = prompt_layers.iter().map(|kv| r.share(kv)).collect();
        let decoder = self.decoder();
        let h = decoder
            .forward_embeds(
                &decoder.embed(responses),
                &r.positions,
                &r.key_mask,
                Some(&mut layers),
                &[],
            )
            .context("response pass over the shared prompts")?;
        r.token_stats(
            &prompt_hidden,
            &h,
            self.lm_head(),
            responses,
            entropy,
            temperature,
        )
    }

    fn response_loss_gradients(
        &self,
        rows: &ResponseRows,
        params: &[Tensor],
        loss: &mut ResponseLoss,
    ) -> Result<Vec<Tensor>> {
        check_responses(rows.group, rows.responses, rows.response_mask)?;
        recompute::response_loss_gradients(self, rows, params, loss)
    }

    fn eos_token_ids(&self) -> &[i64] {
        self.stop_token_ids()
    }

    fn image_tokens(&self) -> Option<ImageTokens> {
        DecoderLm::image_tokens(self)
    }
}

fn check_responses(group: &Tensor, responses: &Tensor, response_mask: &Tensor) -> Result<()> {
    let (b, lr) = (responses.size()[0], responses.size()[1]);
    if response_mask.size() != [b, lr] || group.size() != [b] || lr < 1 {
        bail!(
            "responses {:?}, response_mask {:?} and group {:?} must be [B, Lr], [B, Lr] and [B] with Lr >= 1",
            responses.size(),
            response_mask.size(),
            group.size()
        );
    }
    Ok(())
}
