//! One file per command group.

pub mod bench;
pub mod bench_grpo;
pub mod bundle;
pub mod data;
pub mod model;
pub mod plan;
pub mod plugin;
pub mod train;
