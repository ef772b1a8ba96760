//! The trainer's building blocks: the experiment file, the optimizer and
//! atomic checkpoint directories.

pub mod adamw;
pub mod checkpoint_store;
pub mod experiment;
