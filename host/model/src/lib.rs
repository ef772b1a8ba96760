//! Qwen2.5-VL (and text-only Qwen2) in tch: Hugging Face checkpoints in and out,
//! the processor (tokenizer, chat template, images, M-RoPE positions), the
//! forward pass and batched generation with a KV cache.

pub mod processor;
pub mod lm;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod qwen2;
pub mod qwen2_5_vl;
pub mod rope;
pub mod vision;
pub mod generate;
pub mod sampling;
pub mod bench;
pub mod logits;
