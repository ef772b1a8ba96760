//! How `model.dtype` stores and trains the weights: all f32, mixed precision
//! (bf16/f16 compute, f32 masters) or pure bf16/f16.

use anyhow::{Context, Result};
use lmmhost_model::device::parse_dtype;
use tch::Kind;

/// How `model.dtype` stores and trains the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// `"f32"`: everything in f32.
    Full,
    /// `"bf16"` / `"f16"`: the model (forward, backward, rollouts) in that
    /// type; the optimizer's f32 master weights and f32 moments, gradients
    /// summed in f32.
    Mixed(Kind),
    /// `"bf16-pure"` / `"f16-pure"`: weights, gradients and moments all in
    /// that type. Updates smaller than half a unit in the last place round
    /// away: at lr 1e-6 (1e-5 too) almost no weight ever moves.
    Pure(Kind),
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision> {
        let (base, pure) = match s.trim().strip_suffix("-pure") {
            Some(b) => (b, true),
            None => (s, false),
        };
        let kind = parse_dtype(base).with_context(|| {
            format!(
                "dtype {s:?}: expected \"f32\", \"bf16\", \"f16\", \"bf16-pure\" or \"f16-pure\""
            )
        })?;
        Ok(match (kind, pure) {
            (Kind::Float, false) => Precision::Full,
            (Kind::Float, true) => anyhow::bail!("dtype {s:?}: \"-pure\" is for bf16 and f16 only"),
            (k, false) => Precision::Mixed(k),
            (k, true) => Precision::Pure(k),
        })
    }

    /// The type the model's tensors are stored and computed in.
    pub fn kind(self) -> Kind {
        match self {
            Precision::Full => Kind::Float,
            Precision::Mixed(k) | Precision::Pure(k) => k,
        }
    }

    /// Whether the optimizer keeps f32 master weights.
    pub fn master_weights(self) -> bool {
        matches!(self, Precision::Mixed(_))
    }

    /// Bytes per stored value: 4 for f32, 2 for bf16 and f16.
    pub fn storage_bytes(self) -> u64 {
        match self.kind() {
            Kind::Float => 4,
            _ => 2,
        }
    }
}
