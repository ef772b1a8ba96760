//! LoRA adapters as PEFT defines them: a frozen linear layer `W` gains
//! `y += scaling * B(A(dropout(x)))` with `A` `[rank, in]` (Kaiming-uniform,
//! as `nn.Linear` initialises) and `B` `[out, rank]` (zeros, so a fresh
//! adapter leaves the model as it was), `scaling = alpha / rank` (or
//! `alpha / sqrt(rank)` with rsLoRA).
//!
//! The adapters live inside the linear layers they adapt ([`crate::layers::Linear`])
//! as ordinary tensors, named `{layer}.lora_A.weight` / `{layer}.lora_B.weight`
//! among the model's parameters, so anything that walks a layer's parameters
//! (optimizer, a recomputing backward) finds them. On disk they are a PEFT
//! adapter directory ([`crate::peft_adapter`]).

use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::Tensor;

/// A model's named parameters (as [`crate::weights::Params`]; spelled out
/// here so that the weights module, which builds adapters, is not imported).
type Params = Vec<(String, Tensor)>;

/// The language-model projections an adapter can target (names as in
/// `model.layers.N.self_attn.*` and `model.layers.N.mlp.*`).
pub const LANGUAGE_TARGETS: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which layers get adapters and how they are scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: i64,
    pub alpha: f64,
    /// Dropout on the adapter's input, in training forwards only.
    pub dropout: f64,
    /// Language-model projections (see [`LANGUAGE_TARGETS`]).
    pub targets: Vec<String>,
    /// Also every linear layer of the vision tower's blocks (attention
    /// `qkv`, `proj` and the MLP); the patch embedding and mergers stay frozen.
    pub vision: bool,
    /// rsLoRA: `scaling = alpha / sqrt(rank)`.
    pub rslora: bool,
}

impl LoraConfig {
    /// Problems with the settings, each naming its key under `prefix` (e.g. `model.lora`).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.rank < 1 {
            out.push(format!("{prefix}.rank = {}: must be >= 1", self.rank));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            out.push(format!("{prefix}.alpha = {}: must be > 0", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            out.push(format!(
                "{prefix}.dropout = {}: must be in [0, 1)",
                self.dropout
            ));
        }
        if self.targets.is_empty() && !self.vision {
            out.push(format!(
                "{prefix}.targets is empty and {prefix}.vision = false: no layer would get an adapter"
            ));
        }
        for t in &self.targets {
            if !LANGUAGE_TARGETS.contains(&t.as_str()) {
                out.push(format!(
                    "{prefix}.targets: unknown target {t:?}; expected some of {}",
                    LANGUAGE_TARGETS.join(", ")
                ));
            }
        }
        out
    }

    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Whether the linear layer with canonical name `layer` gets an adapter.
    pub fn applies_to(&self, layer: &str) -> bool {
        if layer.starts_with("visual.") {
            return self.vision && layer.starts_with("visual.blocks.");
        }
        layer.starts_with("model.layers.")
            && layer
                .rsplit('.')
                .next()
                .is_some_and(|last| self.targets.iter().any(|t| t == last))
    }
}

/// Turns every adapter of one model off and on at once: the model with its
/// adapters off is the base model, which serves as the KL reference
/// without a second copy of the weights.
#[derive(Debug, Clone)]
pub struct AdapterSwitch(Arc<AtomicBool>);

impl Default for AdapterSwitch {
    fn default() -> Self {
        AdapterSwitch(Arc::new(AtomicBool::new(true)))
    }
}

impl AdapterSwitch {
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Runs `f` with the adapters off (the base model), then turns them
    /// back on. Nothing else may run the model meanwhile.
    pub fn without_adapters<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.store(false, Ordering::Relaxed);
        let out = f();
        self.0.store(true, Ordering::Relaxed);
        out
    }
}

/// One layer's adapter.
pub struct LoraAdapter {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`.
    pub b: Tensor,
    scaling: f64,
    dropout: f64,
    switch: AdapterSwitch,
}

impl LoraAdapter {
    /// A and B both zero: [`init_adapters`] draws A once the whole model is
    /// built, so that the base weights a seed draws do not depend on LoRA.
    pub fn new(
        c: &LoraConfig,
        out_dim: i64,
        in_dim: i64,
        like: &Tensor,
        switch: &AdapterSwitch,
    ) -> Self {
        let opts = (like.kind(), like.device());
        LoraAdapter {
            a: Tensor::zeros([c.rank, in_dim], opts),
            b: Tensor::zeros([out_dim, c.rank], opts),
            scaling: c.scaling(),
            dropout: c.dropout,
            switch: switch.clone(),
        }
    }

    /// Whether the adapter adds its output (see [`AdapterSwitch`]).
    pub fn is_on(&self) -> bool {
        self.switch.is_on()
    }

    /// `scaling * B(A(dropout(x)))`. Dropout acts only in a forward that
    /// records gradients for the adapter (the update), never in rollouts or
    /// log-prob passes.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        // An op on A requires grad only when autograd records (grad mode on).
        let training = self.dropout > 0.0 && (self.a.get(0).get(0) * 1.0).requires_grad();
        let x = if training {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.linear(&self.a, None::<&Tensor>)
            .linear(&self.b, None::<&Tensor>)
            * self.scaling
    }

    pub fn params(&self, layer: &str, out: &mut Params) {
        out.push((format!("{layer}.lora_A.weight"), self.a.shallow_clone()));
        out.push((format!("{layer}.lora_B.weight"), self.b.shallow_clone()));
    }
}

/// Whether a parameter name is an adapter's.
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// Draws every `lora_A` from PEFT's default, `kaiming_uniform_(a = sqrt(5))`,
/// i.e. U(-1/sqrt(in), 1/sqrt(in)), from its own generator seeded with `seed`
/// (libtorch's global generator stays as the base model's draw left it).
pub fn init_adapters(params: &Params, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let _guard = tch::no_grad_guard();
    for (name, t) in params {
        if !name.ends_with(".lora_A.weight") {
            continue;
        }
        let bound = 1.0 / (t.size()[1] as f64).sqrt();
        let values: Vec<f32> = (0..t.numel())
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let drawn = Tensor::from_slice(&values)
            .reshape(t.size())
            .to_kind(t.kind())
            .to_device(t.device());
        t.shallow_clone().copy_(&drawn);
    }
}
