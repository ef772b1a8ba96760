//! The interface between the networks (`qwen2.rs`, `qwen2_5_vl.rs`) and
//! everything that drives them (generation, log-probs for training, the CLI).

use anyhow::Result;
use tch::Tensor;

/// One forward pass over a left-padded batch.
#[derive(Clone, Copy)]
pub struct ForwardInputs<'a> {
    /// `[B, L]` int64 token ids, left-padded.
    pub input_ids: &'a Tensor,
    /// `[B, L]` int64, 1 for real tokens, 0 for left padding.
    pub attention_mask: &'a Tensor,
    /// Rotary positions: `[3, B, L]` (t, h, w) for Qwen2.5-VL, `[B, L]` for Qwen2.
    /// `None`: the model derives them (text-only: cumulative sum of the mask).
    pub position_ids: Option<&'a Tensor>,
    /// `[N_patches, C * T * P * P]` float, as Qwen2VLImageProcessor flattens them.
    pub pixel_values: Option<&'a Tensor>,
    /// `[N_images, 3]` int64 (t, h, w) in patches.
    pub image_grid_thw: Option<&'a Tensor>,
}

/// Keys and values of every decoder layer for the tokens seen so far.
pub struct KvCache {
    /// Per layer `(k, v)`, each `[B, num_kv_heads, T, head_dim]`.
    pub layers: Vec<(Tensor, Tensor)>,
    /// `[B, T]` int64 mask of the cached tokens (0 for left padding).
    pub attention_mask: Tensor,
    /// `[B]` int64: the rotary position the next token gets (per sequence;
    /// for Qwen2.5-VL, M-RoPE positions of text after images are shifted by
    /// the rope deltas, so this is not simply T).
    pub next_position: Tensor,
    /// Optional preallocated storage per layer, `[B, num_kv_heads, T_max,
    /// head_dim]`, of which `layers` are the first T positions (views): a
    /// decode step then writes its keys/values in place instead of copying
    /// the whole cache. Empty: the cache grows by concatenation.
    pub buffers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// Repeats every row `n` times along the batch (row i becomes rows
    /// i*n .. i*n+n-1), so n continuations start from one prefilled prompt.
    pub fn repeat_rows(self, n: i64) -> KvCache {
        if n == 1 {
            return self;
        }
        let rep = |t: &Tensor| t.repeat_interleave_self_int(n, 0, None::<i64>);
        KvCache {
            layers: self.layers.iter().map(|(k, v)| (rep(k), rep(v))).collect(),
            attention_mask: rep(&self.attention_mask),
            next_position: rep(&self.next_position),
            buffers: Vec::new(),
        }
    }

    /// Rows `first..first + len` of the batch (views; `reserve` before
    /// decoding into them copies them into their own storage).
    pub fn rows(&self, first: i64, len: i64) -> KvCache {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (k.narrow(0, first, len), v.narrow(0, first, len)))
                .collect(),
            attention_mask: self.attention_mask.narrow(0, first, len),
            next_position: self.next_position.narrow(0, first, len),
            buffers: Vec::new(),
        }
    }

    /// Makes room for `extra` more tokens without per-step copies (the cached
    /// keys/values are copied once into new storage). Used under `no_grad` by
    /// generation; a cache that autograd tracks must not be written in place.
    pub fn reserve(&mut self, extra: i64) {
        if extra <= 0 || self.layers.is_empty() {
            return;
        }
        let mut buffers = Vec::with_capacity(self.layers.len());
        let mut layers = Vec::with_capacity(self.layers.len());
        for (k, v) in &self.layers {
            let s = k.size();
            let t = s[2];
            let alloc = |x: &Tensor| {
                let buf = x.new_empty([s[0], s[1], t + extra, s[3]], (x.kind(), x.device()));
                buf.narrow(2, 0, t).copy_(x);
                buf
            };
            let (bk, bv) = (alloc(k), alloc(v));
            layers.push((bk.narrow(2, 0, t), bv.narrow(2, 0, t)));
            buffers.push((bk, bv));
        }
        self.layers = layers;
        self.buffers = buffers;
    }
}

/// Whether [`CausalLm::token_stats`] computes per-position entropies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entropy {
    Off,
    /// For the metrics only: computed without autograd history.
    Detached,
    /// For an entropy bonus in the loss.
    Differentiable,
}

/// The attention of every decoder layer in a decode step, supplied by the
/// caller of [`CausalLm::decode_with`]: it owns the keys/values (the rollout
/// engine keeps each prompt's once and each row's own tokens apart).
pub trait DecodeAttention {
    /// Layer `layer`'s attention output `[B, 1, H * D]` for the new queries
    /// `q` `[B, H, 1, D]` and keys/values `k`, `v` `[B, kvH, 1, D]` (rotary
    /// positions applied), which it also stores for the steps after.
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor;
}

/// How a vision-language model marks images in `input_ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    /// The id of `<|image_pad|>`: one per merged patch.
    pub id: i64,
    /// Patches of `image_grid_thw` (t x h x w) per image token.
    pub patches_per_token: i64,
}

/// Responses over shared prompts, as [`CausalLm::response_token_stats`] takes them.
pub struct ResponseRows<'a> {
    pub prompts: &'a ForwardInputs<'a>,
    pub group: &'a Tensor,
    pub responses: &'a Tensor,
    pub response_mask: &'a Tensor,
    pub entropy: Entropy,
    pub temperature: f64,
}

/// A loss from response log-probs `[B, Lr]` and (when asked for) entropies.
pub type ResponseLoss<'a> = dyn FnMut(&Tensor, Option<&Tensor>) -> Result<Tensor> + 'a;

/// A causal language model (text-only or vision-language).
pub trait CausalLm {
    /// Full logits `[B, L, V]` (float32 for f32 models).
    fn forward(&self, inputs: &ForwardInputs) -> Result<Tensor>;

    /// Runs the prompt, fills a fresh cache, returns the last position's logits `[B, V]`.
    fn prefill(&self, inputs: &ForwardInputs) -> Result<(Tensor, KvCache)>;

    /// Appends one token per sequence (`ids`: `[B, 1]`), returns logits `[B, V]`.
    fn decode_step(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor>;

    /// One token per row (`ids` `[B, 1]`, text) at rotary `positions` `[B]`,
    /// with each layer's attention over past keys/values done by `attention`;
    /// returns logits `[B, V]`.
    fn decode_with(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention: &mut dyn DecodeAttention,
    ) -> Result<Tensor>;

    /// Log-probabilities of `targets` (`[B, L]`, the token that follows each
    /// position) under the model, `[B, L]` float32, computed without keeping a
    /// full float32 `[B, L, V]` tensor alive when it can be avoided; with
    /// `entropy`, also the entropy of each position's next-token distribution
    /// `[B, L]` (the entropy bonus of GRPO; costs one more pass over the logits).
    fn token_stats(
        &self,
        inputs: &ForwardInputs,
        targets: &Tensor,
        entropy: Entropy,
    ) -> Result<(Tensor, Option<Tensor>)>;

    /// Log-probabilities (and entropies) of responses that continue shared
    /// prompts, each prompt computed once: `prompts` is a left-padded `[G, Lp]`
    /// batch of distinct prompts (with their images), `group` `[B]` int64 the
    /// prompt of each response, `responses` `[B, Lr]` right-padded ids with
    /// `response_mask` `[B, Lr]` (1 on real tokens). The prompts' keys and values
    /// serve every response of their group (and gradients from all of them flow
    /// back into the one prompt pass). Returns `[B, Lr]`: column j is the
    /// log-prob of response token j, equal to [`CausalLm::token_stats`] on the
    /// concatenated rows to float tolerance. `temperature` divides the
    /// logits first: a policy that samples at T is trained on
    /// `softmax(logits / T)` (1 is the model's own distribution).
    fn response_token_stats(
        &self,
        prompts: &ForwardInputs,
        group: &Tensor,
        responses: &Tensor,
        response_mask: &Tensor,
        entropy: Entropy,
        temperature: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let _ = (
            prompts,
            group,
            responses,
            response_mask,
            entropy,
            temperature,
        );
        anyhow::bail!("this model does not compute responses over shared prompts")
    }

    /// The gradients, for `params` (in order; undefined where a parameter
    /// gets none), of `loss(log-probs, entropies)` over
    /// [`CausalLm::response_token_stats`] of `rows`, with activation
    /// checkpointing: the forward keeps each decoder layer's inputs only and
    /// the backward recomputes one layer at a time (see `recompute`).
    fn response_loss_gradients(
        &self,
        rows: &ResponseRows,
        params: &[Tensor],
        loss: &mut ResponseLoss,
    ) -> Result<Vec<Tensor>> {
        let _ = (rows, params, loss);
        anyhow::bail!("this model has no activation checkpointing")
    }

    /// [`CausalLm::token_stats`] without the entropy.
    fn token_logprobs(&self, inputs: &ForwardInputs, targets: &Tensor) -> Result<Tensor> {
        Ok(self.token_stats(inputs, targets, Entropy::Off)?.0)
    }

    /// End-of-sequence and other special token ids the model was configured with.
    fn eos_token_ids(&self) -> &[i64];

    /// How images appear in the prompt (`None`: a text-only model).
    fn image_tokens(&self) -> Option<ImageTokens> {
        None
    }
}
