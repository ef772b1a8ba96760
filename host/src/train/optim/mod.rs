//! The optimizer side of an update: AdamW (with f32 master weights for a
//! model stored in bf16/f16) and the in-place gradient accumulator the
//! micro-batches add into; under ZeRO, the state as this rank's shards, and
//! under ZeRO-2 the gradients' sum too.

mod adamw;
pub mod checkpoint;
mod grads;
mod shard_grads;
mod tensor_file;
mod zero;

pub use adamw::{clip_grad_norm, clip_to_norm, param_grads, squared_norm, AdamW, ZeroShards};
pub use grads::{sum_kind, GradAccumulator};
pub use shard_grads::ShardedGradSum;
pub(crate) use zero::BUCKET_BYTES;
