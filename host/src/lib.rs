//! lmmhost: staged, rule-based RL for small multimodal models. The binary's
//! commands are in `main.rs` / `cli/`; everything else is here so that tests
//! and benchmarks can use it.

pub mod memory;
pub mod metrics;
pub mod rl;
pub mod train;
