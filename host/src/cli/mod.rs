//! One file per command group.

pub mod bench;
pub mod bench_grpo;
pub mod bench_grpo_setup;
pub mod bench_model;
pub mod bench_parity;
pub mod bundle;
pub mod check;
pub mod data;
pub mod model;
pub mod plan;
pub mod plugin;
pub mod train;
