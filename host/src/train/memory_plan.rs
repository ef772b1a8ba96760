//! `lmmhost plan`: the accelerator memory a run needs, by part, predicted
//! from the model's config.json and the experiment's settings before any
//! weight is loaded.
//!
//! Bytes per parameter (P all parameters, T the trainable ones (with
//! `model.lora` the adapters, see [`lora::adapter_params`]), s the
//! storage size of `model.dtype`: 4 for f32, 2 for bf16/f16):
//! - weights P*s; master weights T*4 under mixed precision;
//! - optimizer moments 2*T*4 (2*T*s for "-pure");
//! - gradients: the in-place sum (T*4: `.grad` in f32, the f32 buffers under
//!   mixed precision, T*s for "-pure") plus one micro-batch's gradients in
//!   flight per worker (T*s);
//! - activations of one micro-batch kept for the backward: per token and
//!   decoder layer `(8H + 4I + 2(nh + 2kv)hd) * s` plus the attention
//!   probabilities `nh * L * s` (L the sequence length; the CPU and math
//!   kernels keep them), and the log-softmax chunk `V * 4` per token;
//! - KV cache of the rollout: `2 * layers * kv * hd * s` per token held,
//!   `rollout.kv_cache_budget` tokens, or every row's prompt and response
//!   at once without it (each prompt once per group);
//! - the reference model, when the KL term needs one and it is not placed
//!   on the CPU: P * s_ref (none under LoRA when it is the policy with its
//!   adapters off).
//!
//! The rollout and the update do not overlap: the peak is the resident
//! parts (weights, masters, moments, reference, and the f32 `.grad` sum,
//! which stays allocated between steps) plus the larger of the KV cache and
//! the update's gradients in flight and activations.

use anyhow::{bail, Result};
use lmmhost_model::config::{Architecture, ModelConfig, TextConfig, VisionConfig};

use super::experiment::Experiment;
use super::lora;
use super::precision::Precision;

/// Parameter counts of a model, from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    pub language: u64,
    pub vision: u64,
}

impl ParamCount {
    pub fn total(&self) -> u64 {
        self.language + self.vision
    }
}

fn text_params(c: &TextConfig, qk_norm: bool) -> u64 {
    let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (nh, kv) = (c.num_attention_heads, c.num_key_value_heads);
    let bias = if c.attention_bias {
        (nh + 2 * kv) * hd
    } else {
        0
    };
    let norms = if qk_norm { 2 * hd } else { 0 };
    let layer = h * (nh + 2 * kv) * hd + bias + nh * hd * h + 3 * h * i + 2 * h + norms;
    let embed = c.vocab_size * h;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    (embed + head + c.num_hidden_layers * layer + h) as u64
}

/// Qwen2.5-VL's vision tower: patch embedding, blocks (RMSNorm, fused qkv,
/// gated MLP, all with biases) and the 2x2 patch merger.
fn qwen2_5_vision_params(v: &VisionConfig) -> u64 {
    let (h, i) = (v.hidden_size, v.intermediate_size);
    let block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + (2 * h * i + 2 * i) + (i * h + h);
    let m = h * v.spatial_merge_size * v.spatial_merge_size;
    let merger = h + (m * m + m) + (m * v.out_hidden_size + v.out_hidden_size);
    (v.patch_dim() * h + v.depth * block + merger) as u64
}

pub fn param_count(c: &ModelConfig) -> Result<ParamCount> {
    Ok(match (c.architecture, &c.vision) {
        (Architecture::Qwen2, _) => ParamCount {
            language: text_params(&c.text, false),
            vision: 0,
        },
        (Architecture::Qwen3, _) => ParamCount {
            language: text_params(&c.text, true),
            vision: 0,
        },
        (Architecture::Qwen2_5Vl, Some(v)) => ParamCount {
            language: text_params(&c.text, false),
            vision: qwen2_5_vision_params(v),
        },
        (a, _) => bail!("lmmhost plan does not know the parameter layout of {a:?} yet"),
    })
}

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

/// What the plan assumes about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInputs {
    pub params: ParamCount,
    pub trainable: u64,
    pub precision: Precision,
    /// Bytes per reference weight; `None` without a reference on the device.
    pub reference_bytes: Option<u64>,
    pub micro_batch_size: u64,
    pub workers: u64,
    /// Tokens of one row in the update (prompt + response).
    pub row_tokens: u64,
    /// Tokens the rollout's KV cache holds at its fullest.
    pub kv_tokens: u64,
    pub shape: Shape,
}

/// Predicted bytes, by part.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MemoryPlan {
    pub weights: u64,
    pub master_weights: u64,
    pub optimizer: u64,
    /// The in-place sum (resident in f32) plus the gradients in flight.
    pub gradients: u64,
    pub activations: u64,
    pub kv_cache: u64,
    pub reference_model: u64,
    pub peak: u64,
}

fn storage_bytes(p: Precision) -> u64 {
    match p.kind() {
        tch::Kind::Float => 4,
        _ => 2,
    }
}

impl PlanInputs {
    pub fn from_experiment(exp: &Experiment, config: &ModelConfig) -> Result<PlanInputs> {
        let mut params = param_count(config)?;
        let g = &exp.grpo;
        // With LoRA the adapters are what trains (and what the freeze keys pick from).
        let lora = exp
            .model
            .lora
            .as_ref()
            .map(|l| lora::adapter_params(config, l));
        let tower = lora.unwrap_or(params);
        let trainable = match (g.freeze_vision, g.freeze_language) {
            (true, true) => 0,
            (true, false) => tower.language,
            (false, true) => tower.vision,
            (false, false) => tower.total(),
        };
        if let Some(a) = lora {
            params.language += a.language;
            params.vision += a.vision;
        }
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
                Some(d) => Precision::parse(d).map(storage_bytes).unwrap_or(4),
                None => storage_bytes(precision),
            });
        let r = &exp.rollout;
        let rows = (r.prompts_per_step as u64) * u64::from(r.group_size);
        let all_rows = r.prompts_per_step as u64 * r.max_prompt_tokens as u64
            + rows * r.max_response_tokens as u64;
        Ok(PlanInputs {
            params,
            trainable,
            precision,
            reference_bytes,
            micro_batch_size: exp.optim.micro_batch_size as u64,
            workers: exp.model.workers as u64,
            row_tokens: (r.max_prompt_tokens + r.max_response_tokens) as u64,
            kv_tokens: r.kv_cache_budget.map_or(all_rows, |b| b as u64),
            shape: Shape::of(&config.text),
        })
    }

    /// Activation bytes of a micro-batch of `rows` rows.
    pub fn activations(&self, rows: u64) -> u64 {
        let (s, l, m) = (storage_bytes(self.precision), self.row_tokens, &self.shape);
        let per_token_layer = (8 * m.hidden
            + 4 * m.intermediate
            + 2 * (m.heads + 2 * m.kv_heads) * m.head_dim
            + m.heads * l)
            * s;
        rows * l * (m.layers * per_token_layer + m.vocab * 4)
    }

    pub fn kv_bytes(&self, tokens: u64) -> u64 {
        let m = &self.shape;
        tokens * 2 * m.layers * m.kv_heads * m.head_dim * storage_bytes(self.precision)
    }

    pub fn plan(&self) -> MemoryPlan {
        self.plan_with(self.micro_batch_size, self.kv_tokens)
    }

    fn plan_with(&self, micro_batch_size: u64, kv_tokens: u64) -> MemoryPlan {
        let s = storage_bytes(self.precision);
        let (p, t) = (self.params.total(), self.trainable);
        let (master_weights, optimizer, sum) = match self.precision {
            Precision::Full => (0, 8 * t, 4 * t),
            Precision::Mixed(_) => (4 * t, 8 * t, 4 * t),
            Precision::Pure(_) => (0, 2 * s * t, s * t),
        };
        let in_flight = self.workers.max(1) * s * t;
        let activations = self.activations(micro_batch_size);
        let kv_cache = self.kv_bytes(kv_tokens);
        let reference_model = self.reference_bytes.map_or(0, |b| b * p);
        let weights = s * p;
        // The f32 `.grad` sum stays allocated between steps; the mixed
        // precision buffers only live through an update.
        let resident_sum = if matches!(self.precision, Precision::Mixed(_)) {
            0
        } else {
            sum
        };
        let resident = weights + master_weights + optimizer + reference_model + resident_sum;
        let update = sum - resident_sum + in_flight + activations;
        MemoryPlan {
            weights,
            master_weights,
            optimizer,
            gradients: sum + in_flight,
            activations,
            kv_cache,
            reference_model,
            peak: resident + update.max(kv_cache),
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
        let resident = base.peak - (base.gradients + base.activations).min(base.peak);
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
            trainable: param_count(&c).unwrap().total(),
            precision,
            reference_bytes: Some(2),
            micro_batch_size: 1,
            workers: 1,
            row_tokens: 2048,
            kv_tokens: 100_000,
            shape: Shape::of(&c.text),
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
}
