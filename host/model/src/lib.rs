//! Qwen2.5-VL (and text-only Qwen2) in tch: Hugging Face checkpoints in and out,
//! the processor (tokenizer, chat template, images, M-RoPE positions), the
//! forward pass and batched generation with a KV cache.
//!
//! Layers: `weights` (safetensors files) <- `layers` <- one file per model part
//! (`qwen2`, `qwen2_5_vl`, `qwen2_5_vl_vision`) <- `model` (the architectures
//! behind one type) <- `checkpoint` (directories in and out); `causal_lm`
//! turns any model into the [`lm::CausalLm`] that generation and training use.

pub mod bench;
pub mod causal_lm;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod generate;
pub mod layers;
pub mod lm;
pub mod model;
pub mod parallel;
pub mod parity_dump;
pub mod processor;
pub mod prompt_file;
pub mod qwen2;
pub mod qwen2_5_vl;
pub mod qwen2_5_vl_vision;
pub mod rope;
pub mod sampling;
pub mod token_stats;
pub mod weights;
