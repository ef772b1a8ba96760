//! `lmmhost plan`: the accelerator memory a run needs, by part, predicted
//! from the model's config.json and the experiment's settings before any
//! weight is loaded.
//!
//! Bytes per parameter (P all parameters, T the trainable ones (with
//! `model.lora` the adapters, see [`param_count::adapter_params`]), s the
//! storage size of `model.dtype`: 4 for f32, 2 for bf16/f16):
//! - weights P*s; master weights T*4 under mixed precision;
//! - optimizer moments 2*T*4 (2*T*s for "-pure");
//! - under ZeRO (`distributed.zero_stage` 1 or 2 on N ranks) each rank holds
//!   1/N of the master weights and moments; under stage 1 the gradients'
//!   sum stays whole on every rank;
//! - gradients: the in-place sum (T*4: `.grad` in f32, the f32 buffers under
//!   mixed precision, T*s for "-pure") plus one micro-batch's gradients in
//!   flight per worker (T*s). Under ZeRO stage 2 on N ranks each
//!   micro-batch's gradients are reduce-scattered into this rank's shards of
//!   the sum, so the sum is T*4/N (T*s/N for "-pure") plus the flat buckets
//!   on their way (two of 25 MiB, or the whole sum when smaller), allocated
//!   through the update only;
//! - activations of one micro-batch kept for the backward. Prompts run once
//!   per group (G = rows / group size of them), so a micro-batch of R rows
//!   computes `G*Lp + R*Lr` tokens; per token and decoder layer the layer
//!   keeps `(8H + 4I + 2(nh + 2kv)hd) * s`, and each response row keeps
//!   copies of its prompt's keys/values, `R*Lp * 4*nh*hd * s` per layer
//!   (gathered per row, expanded for grouped-query attention); the
//!   log-softmax chunk adds `V * 4` per response token. No attention
//!   probabilities: SDPA's fused kernels (flash on CPU and CUDA) keep none.
//!   Measured on CPU (12 M-parameter Qwen2, 16 rows, Lp 69, Lr 8 to 128):
//!   within 3 % of the update's peak rise;
//! - the update's own peak: the activations, or (small micro-batches) the
//!   gradients in flight plus backward and optimizer transients of about
//!   0.4 gradient copies (measured, not derived); with activation
//!   checkpointing the gradients in flight, each layer's saved inputs
//!   (`(G*Lp + R*Lr) * H * s` per layer) and one layer's activations;
//!   under mixed precision the f32 sum buffers (T*4) on top, from the second
//!   wave of micro-batches on (the first wave's gradients create them);
//! - the no-grad log-prob passes (old policy, reference) per chunk of
//!   `grpo.logprob_chunk_tokens` (or a micro-batch): the prompts' keys and
//!   values of every layer plus one layer's transients, `(3I + 4H) * s` per
//!   token and the responses' copies of the prompts' keys/values;
//! - KV cache of the rollout: `2 * layers * kv * hd * s` per token held,
//!   `rollout.kv_cache_budget` tokens, or every row's prompt and response
//!   at once without it (each prompt once per group);
//! - the reference model, when the KL term needs one and it is not placed
//!   on the CPU: P * s_ref (none under LoRA when it is the policy with its
//!   adapters off).
//!
//! The rollout, the log-prob passes and the update do not overlap: the peak
//! is the resident parts (weights, masters, moments, reference, and the f32
//! `.grad` sum, which stays allocated between steps) plus the largest of the
//! KV cache, a log-prob chunk, and the update's transients.
//!
//! The vision tower's activations are their own part (see [`vision`]):
//! each prompt of a micro-batch brings one image of `max_pixels`, the
//! worst case, since the plan does not read the data.

use anyhow::Result;
use lmmhost_model::config::{ModelConfig, TextConfig};

use super::experiment::Experiment;
use super::lora;
use super::optim::BUCKET_BYTES;
use super::param_count::{self, param_count, ParamCount};
use super::precision::Precision;

pub mod vision;
pub use vision::{VisionInputs, VisionShape};

/// The decoder's shape, as the activation and KV-cache terms use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub layers: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab: u64,
}

impl Shape {
    pub fn of(t: &TextConfig) -> Shape {
        Shape {
            layers: t.num_hidden_layers as u64,
            hidden: t.hidden_size as u64,
            intermediate: t.intermediate_size as u64,
            heads: t.num_attention_heads as u64,
            kv_heads: t.num_key_value_heads as u64,
            head_dim: t.head_dim as u64,
            vocab: t.vocab_size as u64,
        }
    }
}

/// Trainable parameters among `params`: all but the frozen parts. With LoRA
/// `params` are the adapters (also counted in [`PlanInputs::adapter_params`]):
/// the base weights are frozen and only the adapters get gradients and moments.
pub fn trainable_params(exp: &Experiment, params: ParamCount) -> u64 {
    let g = &exp.grpo;
    match (g.freeze_vision, g.freeze_language) {
        (true, true) => 0,
        (true, false) => params.language,
        (false, true) => params.vision,
        (false, false) => params.total(),
    }
}

/// What the plan assumes about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInputs {
    pub params: ParamCount,
    /// Parameters added to the model for training (LoRA adapters; 0 without).
    pub adapter_params: u64,
    pub trainable: u64,
    pub precision: Precision,
    /// Bytes per reference weight; `None` without a reference on the device.
    pub reference_bytes: Option<u64>,
    pub micro_batch_size: u64,
    pub workers: u64,
    /// Rows per optimizer step (a step's rows over `grpo.updates_per_batch`).
    pub update_rows: u64,
    /// Tokens of one row in the update (prompt + response).
    pub row_tokens: u64,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    /// Rows per prompt (the prompt's tokens run once for them).
    pub group_size: u64,
    pub activation_checkpointing: bool,
    /// Padded tokens per chunk of the log-prob passes (`None`: a micro-batch).
    pub logprob_chunk_tokens: Option<u64>,
    /// Tokens the rollout's KV cache holds at its fullest.
    pub kv_tokens: u64,
    pub shape: Shape,
    /// The vision tower and the image each prompt brings (`None`: a text model).
    pub vision: Option<VisionInputs>,
    /// Data-parallel ranks.
    pub ranks: u64,
    /// `distributed.zero_stage` (0 on one rank: nothing to shard).
    pub zero_stage: u8,
}

/// Predicted bytes, by part.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MemoryPlan {
    pub weights: u64,
    pub master_weights: u64,
    pub optimizer: u64,
    /// The in-place sum (resident in f32) plus the gradients in flight.
    pub gradients: u64,
    /// The decoder's (and the loss head's) activations of one micro-batch.
    pub activations: u64,
    /// What the vision tower adds to them (see [`vision`]).
    pub vision_activations: u64,
    /// The update's transients beyond the resident parts (activations or
    /// gradients in flight, whichever peaks).
    pub update: u64,
    /// One chunk of the no-grad log-prob passes.
    pub logprob_pass: u64,
    pub kv_cache: u64,
    pub reference_model: u64,
    pub peak: u64,
}

impl PlanInputs {
    /// The inputs of one rank of `ranks` data-parallel ranks: every rank
    /// holds the whole model and its gradients, the whole optimizer state
    /// or (ZeRO) its shard of it, and generates and trains on its share of
    /// the step's prompts (the largest share, `ceil(prompts / ranks)`).
    pub fn from_experiment(
        exp: &Experiment,
        config: &ModelConfig,
        ranks: usize,
    ) -> Result<PlanInputs> {
        let params = param_count(config)?;
        let g = &exp.grpo;
        // With LoRA the adapters are what trains (the freeze keys pick among them).
        let lora = exp
            .model
            .lora
            .as_ref()
            .map(|l| param_count::adapter_params(config, l));
        let trainable = trainable_params(exp, lora.unwrap_or(params));
        let precision = Precision::parse(&exp.model.dtype)?;
        // The plan is of the accelerator's memory: the reference counts
        // unless it is placed on the CPU.
        let on_device =
            g.kl.reference_device
                .as_ref()
                .is_none_or(|d| !d.trim().eq_ignore_ascii_case("cpu"));
        let copy = !lora::reference_is_policy(exp.model.lora.is_some(), &g.kl);
        let reference_bytes =
            (g.kl.coef > 0.0 && on_device && copy).then(|| match &g.kl.reference_dtype {
                Some(d) => Precision::parse(d)
                    .map(Precision::storage_bytes)
                    .unwrap_or(4),
                None => precision.storage_bytes(),
            });
        let r = &exp.rollout;
        let prompts = r.prompts_per_step.div_ceil(ranks.max(1)) as u64;
        let rows = prompts * u64::from(r.group_size);
        let vision_trains = !g.freeze_vision && lora.unwrap_or(params).vision > 0;
        let vision = VisionInputs::from_experiment(exp, config, vision_trains)?;
        let all_rows = prompts * r.max_prompt_tokens as u64 + rows * r.max_response_tokens as u64;
        Ok(PlanInputs {
            params,
            adapter_params: lora.map_or(0, |a| a.total()),
            trainable,
            precision,
            reference_bytes,
            micro_batch_size: exp.optim.micro_batch_size as u64,
            workers: exp.model.workers as u64,
            update_rows: rows.div_ceil(exp.optim.updates_per_batch.max(1) as u64),
            row_tokens: (r.max_prompt_tokens + r.max_response_tokens) as u64,
            prompt_tokens: r.max_prompt_tokens as u64,
            response_tokens: r.max_response_tokens as u64,
            group_size: u64::from(r.group_size).max(1),
            activation_checkpointing: exp.model.activation_checkpointing,
            logprob_chunk_tokens: g.logprob_chunk_tokens.map(|t| t as u64),
            kv_tokens: r.kv_cache_budget.map_or(all_rows, |b| b as u64),
            shape: Shape::of(&config.text),
            vision,
            ranks: ranks.max(1) as u64,
            zero_stage: if ranks > 1 {
                exp.distributed.zero_stage
            } else {
                0
            },
        })
    }

    /// Tokens a micro-batch of `rows` rows computes: each prompt once per
    /// group, each response per row.
    fn computed_tokens(&self, rows: u64) -> u64 {
        rows.div_ceil(self.group_size) * self.prompt_tokens + rows * self.response_tokens
    }

    /// One decoder layer's activations kept for the backward, for `rows` rows.
    fn layer_activations(&self, rows: u64) -> u64 {
        let (s, m) = (self.precision.storage_bytes(), &self.shape);
        let per_token =
            8 * m.hidden + 4 * m.intermediate + 2 * (m.heads + 2 * m.kv_heads) * m.head_dim;
        let prompt_copies = rows * self.prompt_tokens * 4 * m.heads * m.head_dim;
        (self.computed_tokens(rows) * per_token + prompt_copies) * s
    }

    /// Activation bytes of a micro-batch of `rows` rows, the vision tower's
    /// included.
    pub fn activations(&self, rows: u64) -> u64 {
        let decoder = self.decoder_activations(rows);
        self.vision.as_ref().map_or(decoder, |v| {
            let images = rows.div_ceil(self.group_size);
            v.with_decoder(
                decoder,
                images,
                self.precision,
                self.activation_checkpointing,
            )
        })
    }

    /// The decoder's activation bytes of a micro-batch of `rows` rows (with
    /// activation checkpointing: the layers' saved inputs and one layer's
    /// activations), the loss head's included.
    pub fn decoder_activations(&self, rows: u64) -> u64 {
        let m = &self.shape;
        let head = rows * self.response_tokens * m.vocab * 4;
        if self.activation_checkpointing {
            let saved = self.computed_tokens(rows)
                * m.hidden
                * self.precision.storage_bytes()
                * (m.layers + 1);
            saved + self.layer_activations(rows) + head
        } else {
            m.layers * self.layer_activations(rows) + head
        }
    }

    /// Bytes of the whole sum of an update's gradients (f32, or the
    /// parameters' dtype for "-pure").
    fn gradient_sum(&self) -> u64 {
        match self.precision {
            Precision::Full | Precision::Mixed(_) => 4 * self.trainable,
            Precision::Pure(_) => self.precision.storage_bytes() * self.trainable,
        }
    }

    /// Under ZeRO stage 2 on several ranks, the bytes of this rank's shards
    /// of the sum (the largest, rounded up) and of the flat buckets being
    /// reduce-scattered.
    fn sharded_gradient_sum(&self) -> Option<u64> {
        if self.zero_stage < 2 || self.ranks < 2 {
            return None;
        }
        let sum = self.gradient_sum();
        Some(sum.div_ceil(self.ranks) + sum.min(2 * BUCKET_BYTES as u64))
    }

    /// The update's transients beyond the resident parts, for micro-batches
    /// of `rows` rows (see the module's notes).
    fn update_bytes(&self, rows: u64) -> u64 {
        let s = self.precision.storage_bytes();
        let t = self.trainable;
        let in_flight = self.workers.max(1) * s * t;
        let sharded = self.sharded_gradient_sum();
        let sum_buffers = match sharded {
            Some(shards) => shards,
            None if matches!(self.precision, Precision::Mixed(_)) => 4 * t,
            None => 0,
        };
        let activations = self.workers.max(1) * self.activations(rows);
        let transients = if self.activation_checkpointing {
            in_flight + activations
        } else {
            activations.max(in_flight + in_flight * 2 / 5)
        };
        // The f32 sum buffers are made by the first wave's gradients: with
        // one wave of micro-batches they never coexist with a backward. The
        // shards of ZeRO-2 are made before the first.
        let micro_batches = self.update_rows.max(1).div_ceil(rows.max(1));
        if sharded.is_none() && micro_batches <= self.workers.max(1) {
            transients.max(in_flight + sum_buffers)
        } else {
            sum_buffers + transients
        }
    }

    /// One chunk of a no-grad log-prob pass (per worker).
    pub fn logprob_pass_bytes(&self, micro_batch_size: u64) -> u64 {
        let (s, m) = (self.precision.storage_bytes(), &self.shape);
        let rows = match self.logprob_chunk_tokens {
            Some(t) => (t / self.row_tokens.max(1)).max(1),
            None => micro_batch_size.max(1),
        };
        let tokens = self.computed_tokens(rows);
        let prompt_kv = rows.div_ceil(self.group_size)
            * self.prompt_tokens
            * 2
            * m.kv_heads
            * m.head_dim
            * m.layers;
        let copies = rows * self.row_tokens * 2 * m.heads * m.head_dim;
        let layer = tokens * (3 * m.intermediate + 4 * m.hidden);
        let logits = rows * self.response_tokens * m.vocab * 4;
        let decoder = (prompt_kv + copies + layer) * s + logits;
        let images = rows.div_ceil(self.group_size);
        let pass = self.vision.as_ref().map_or(decoder, |v| {
            v.beside_no_grad(decoder, images, self.precision)
        });
        self.workers.max(1) * pass
    }

    pub fn kv_bytes(&self, tokens: u64) -> u64 {
        let m = &self.shape;
        tokens * 2 * m.layers * m.kv_heads * m.head_dim * self.precision.storage_bytes()
    }

    pub fn plan(&self) -> MemoryPlan {
        self.plan_with(self.micro_batch_size, self.kv_tokens)
    }

    fn plan_with(&self, micro_batch_size: u64, kv_tokens: u64) -> MemoryPlan {
        let s = self.precision.storage_bytes();
        let (p, t) = (self.params.total() + self.adapter_params, self.trainable);
        let (master_weights, optimizer) = match self.precision {
            Precision::Full => (0, 8 * t),
            Precision::Mixed(_) => (4 * t, 8 * t),
            Precision::Pure(_) => (0, 2 * s * t),
        };
        let sharded_sum = self.sharded_gradient_sum();
        let sum = sharded_sum.unwrap_or_else(|| self.gradient_sum());
        // ZeRO: this rank's shard (the largest, rounded up) of the state.
        let shards = if self.zero_stage > 0 { self.ranks } else { 1 };
        let (master_weights, optimizer) =
            (master_weights.div_ceil(shards), optimizer.div_ceil(shards));
        let in_flight = self.workers.max(1) * s * t;
        let activations = self.decoder_activations(micro_batch_size);
        let vision_activations = self
            .activations(micro_batch_size)
            .saturating_sub(activations);
        let kv_cache = self.kv_bytes(kv_tokens);
        let reference_model = self.reference_bytes.map_or(0, |b| b * self.params.total());
        let weights = s * p;
        // The f32 `.grad` sum stays allocated between steps; the mixed
        // precision buffers and ZeRO-2's shards only live through an update.
        let resident_sum = if matches!(self.precision, Precision::Mixed(_)) || sharded_sum.is_some()
        {
            0
        } else {
            sum
        };
        let resident = weights + master_weights + optimizer + reference_model + resident_sum;
        let update = self.update_bytes(micro_batch_size);
        let logprob_pass = self.logprob_pass_bytes(micro_batch_size);
        MemoryPlan {
            weights,
            master_weights,
            optimizer,
            gradients: sum + in_flight,
            activations,
            vision_activations,
            update,
            logprob_pass,
            kv_cache,
            reference_model,
            peak: resident + update.max(kv_cache).max(logprob_pass),
        }
    }

    /// The largest micro-batch size (rows) whose update fits in `budget`
    /// bytes; 0 when not even one row does.
    pub fn largest_micro_batch(&self, budget: u64) -> u64 {
        let mut best = 0;
        let mut rows = 1;
        while rows <= 4096 && self.plan_with(rows, 0).peak <= budget {
            best = rows;
            rows += 1;
        }
        best
    }

    /// The most KV-cache tokens the rollout can hold within `budget` bytes.
    pub fn largest_kv_tokens(&self, budget: u64) -> u64 {
        let base = self.plan_with(1, 0);
        let resident = base.peak - base.update.max(base.logprob_pass).min(base.peak);
        let per_token = self.kv_bytes(1).max(1);
        budget.saturating_sub(resident) / per_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(name: &str) -> ModelConfig {
        ModelConfig::from_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs/models")
                .join(name),
        )
        .unwrap()
    }

    /// Parameter counts of the shipped shape configs equal transformers'
    /// (`sum(p.numel())` of Qwen2_5_VLForConditionalGeneration built from
    /// the same config.json on the meta device, transformers 5.2).
    #[test]
    fn parameter_counts_match_transformers() {
        assert_eq!(
            param_count(&config("qwen2.5-vl-3b")).unwrap().total(),
            3_754_622_976
        );
        assert_eq!(
            param_count(&config("qwen2.5-vl-7b")).unwrap().total(),
            8_292_166_656
        );
        // The tiny test models, by the model crate's own parameter list.
        for name in ["tiny-qwen2.5-vl", "char-qwen2"] {
            let c = config(name);
            let m = lmmhost_model::checkpoint::init_random_seeded(
                c.clone(),
                None,
                tch::Device::Cpu,
                tch::Kind::Float,
                0,
            )
            .unwrap();
            let mut seen = std::collections::HashSet::new();
            let n: i64 = m
                .model
                .named_parameters()
                .iter()
                .filter(|(_, t)| seen.insert(t.data_ptr() as usize))
                .map(|(_, t)| t.numel() as i64)
                .sum();
            assert_eq!(param_count(&c).unwrap().total(), n as u64, "{name}");
        }
    }

    fn inputs(precision: Precision) -> PlanInputs {
        let c = config("qwen2.5-vl-3b");
        PlanInputs {
            params: param_count(&c).unwrap(),
            adapter_params: 0,
            trainable: param_count(&c).unwrap().total(),
            precision,
            reference_bytes: Some(2),
            micro_batch_size: 1,
            workers: 1,
            update_rows: 4096,
            row_tokens: 2048,
            prompt_tokens: 1024,
            response_tokens: 1024,
            group_size: 8,
            activation_checkpointing: false,
            logprob_chunk_tokens: None,
            kv_tokens: 100_000,
            shape: Shape::of(&c.text),
            vision: None,
            ranks: 1,
            zero_stage: 0,
        }
    }

    /// The parts follow the bytes-per-parameter table, and the largest
    /// micro-batch found is the largest that fits.
    #[test]
    fn parts_and_limits() {
        let p = 3_754_622_976u64;
        let mixed = inputs(Precision::Mixed(tch::Kind::BFloat16)).plan();
        assert_eq!(mixed.weights, 2 * p);
        assert_eq!(mixed.master_weights, 4 * p);
        assert_eq!(mixed.optimizer, 8 * p);
        assert_eq!(mixed.gradients, 6 * p);
        assert_eq!(mixed.reference_model, 2 * p);
        // 36 layers x 2 x 2 kv heads x 128 x 2 bytes = 36 KiB per token.
        assert_eq!(mixed.kv_cache, 100_000 * 36 * 1024);
        let i = inputs(Precision::Mixed(tch::Kind::BFloat16));
        let budget = 140u64 << 30;
        let m = i.largest_micro_batch(budget);
        assert!(m >= 1);
        assert!(i.plan_with(m, 0).peak <= budget && i.plan_with(m + 1, 0).peak > budget);
        let k = i.largest_kv_tokens(budget);
        assert!(i.plan_with(1, k).peak <= budget && i.plan_with(1, k + 100).peak > budget);
        let pure = inputs(Precision::Pure(tch::Kind::BFloat16)).plan();
        assert_eq!(pure.optimizer, 4 * p);
        assert!(pure.peak < mixed.peak);
    }

    /// ZeRO divides the master weights and moments by the ranks, stage 2
    /// the gradients' sum too; without it (or on one rank) the plan is a
    /// single rank's.
    #[test]
    fn zero_divides_the_optimizer_state() {
        let p = 3_754_622_976u64;
        let one = inputs(Precision::Mixed(tch::Kind::BFloat16));
        let zero = |stage, ranks| PlanInputs {
            zero_stage: stage,
            ranks,
            ..one.clone()
        };
        assert_eq!(zero(0, 8).plan(), one.plan());
        assert_eq!(zero(2, 1).plan(), one.plan());
        for stage in [1, 2] {
            let z = zero(stage, 8).plan();
            assert_eq!(z.master_weights, 4 * p / 8);
            assert_eq!(z.optimizer, 8 * p / 8);
            let saved = 12 * p - 12 * p / 8;
            if stage == 1 {
                assert_eq!(z.gradients, one.plan().gradients);
                assert_eq!(one.plan().peak - z.peak, saved);
            } else {
                // The f32 sum: 1/8 of it, plus two buckets on their way.
                let shards = 4 * p / 8 + (50 << 20);
                assert_eq!(z.gradients, one.plan().gradients - 4 * p + shards);
                // The update's transients are the activations (one row of 2048
                // tokens), the sum's buffers beside them.
                assert_eq!(one.plan().peak - z.peak, saved + 4 * p - shards);
            }
        }
    }
}
