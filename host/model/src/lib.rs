//! Qwen2.5-VL (and text-only Qwen2) in tch: Hugging Face checkpoints in and out,
//! the processor (tokenizer, chat template, images, M-RoPE positions), the
//! forward pass and batched generation with a KV cache.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod generate;
pub mod lm;
pub mod logits;
pub mod parallel;
pub mod processor;
pub mod qwen2;
pub mod qwen2_5_vl;
pub mod rope;
pub mod sampling;
pub mod vision;
