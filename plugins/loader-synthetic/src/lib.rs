//! Loader plugin generating small reasoning tasks from a seed, for the
//! embedded quickstart: arithmetic chains with worked `<think>` traces, and
//! grids of coloured squares (PNG rendered here) to count or describe. Train
//! and eval splits never overlap. Config keys: `docs/loaders.md`.

pub mod arithmetic;
pub mod config;
pub mod dataset;
pub mod png;
pub mod rng;
pub mod shapes;
pub mod split;

#[cfg(test)]
mod tests;

pub use dataset::SyntheticLoader;

lmmhost_sdk::export_loader!(crate::dataset::SyntheticLoader);
