//! Qwen2.5-VL (and text-only Qwen2) in tch: Hugging Face checkpoints in and out,
//! the processor (tokenizer, chat template, images, M-RoPE positions), the
//! forward pass and batched generation with a KV cache.

pub mod processor;
