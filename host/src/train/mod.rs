//! The trainer: the experiment file, the plugins it names, the model being
//! trained, rollouts, one SFT or GRPO step (`step/`), evaluation, checkpoints
//! and the loop that runs them (`run.rs`, with what it carries between steps
//! in `trainer.rs`).

pub mod checkpoint_store;
pub mod data;
pub mod data_parallel;
pub mod dataset_report;
pub mod eval;
pub mod experiment;
pub mod failures;
mod kl_reference;
pub mod lora;
pub mod memory_plan;
pub mod optim;
pub mod param_count;
pub mod plugins;
pub mod policy;
pub mod precision;
mod progress;
pub mod rollout;
pub mod run;
pub mod state;
pub mod step;
mod trainer;
