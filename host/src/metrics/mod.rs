//! Where measurements go: the JSONL log (with TensorBoard event files beside
//! it) and PNG plots.

pub mod log;
pub mod plot;
pub mod run_plots;
pub mod tensorboard;
