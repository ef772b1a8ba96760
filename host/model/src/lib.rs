//! Qwen2.5-VL and Qwen3-VL (and the text-only Qwen2 and Qwen3) in tch: Hugging
//! Face checkpoints in and out, the processor (tokenizer, chat template,
//! images, M-RoPE positions), the forward pass and batched generation with a
//! KV cache.
//!
//! Layers: `weights` (safetensors files) <- `layers`, `vision_layers` <-
//! `decoder` (the decoder stack, generic over its self-attention) <- one file
//! per model part (`qwen2`, `qwen3`: their attention; `qwen2_5_vl_vision`,
//! `qwen3_vl_vision`; `qwen2_5_vl`, `qwen3_vl`) <- `model` (the architectures
//! behind one type) <- `checkpoint` (directories in and out); `causal_lm`
//! turns any model into the [`lm::CausalLm`] that generation and training use.

pub mod bench;
pub mod causal_lm;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod device;
pub mod generate;
pub mod layers;
pub mod lm;
pub mod lora;
pub mod memory;
pub mod model;
pub mod parallel;
pub mod parity_check;
pub mod parity_dump;
pub mod peft_adapter;
pub mod processor;
pub mod prompt_file;
pub mod qwen2;
pub mod qwen2_5_vl;
pub mod qwen2_5_vl_vision;
pub mod qwen3;
pub mod qwen3_vl;
pub mod qwen3_vl_vision;
pub mod rope;
pub mod sampling;
pub mod token_stats;
pub mod vision_layers;
pub mod vision_stages;
pub mod weights;
