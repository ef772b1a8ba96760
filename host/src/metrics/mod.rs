//! Where measurements go: the JSONL log (with TensorBoard event files beside
//! it) and PNG plots.

pub mod bar_chart;
pub mod canvas;
pub mod log;
pub mod plot;
pub mod run_plots;
pub mod tensorboard;
