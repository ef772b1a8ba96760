//! The optimizer side of an update: AdamW (with f32 master weights for a
//! model stored in bf16/f16) and the in-place gradient accumulator the
//! micro-batches add into.

mod adamw;
mod grads;

pub use adamw::{clip_grad_norm, param_grads, AdamW};
pub use grads::GradAccumulator;
