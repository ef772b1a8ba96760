//! Where measurements go besides the JSONL log: TensorBoard event files and PNG plots.

pub mod plot;
pub mod tensorboard;
