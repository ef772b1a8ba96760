//! The trainer: the experiment file, the plugins it names, the model being
//! trained, rollouts, the GRPO and SFT updates, evaluation, checkpoints and
//! the loop that runs them (`run.rs`).

pub mod adamw;
pub mod checkpoint_store;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod grpo;
pub mod plugins;
pub mod policy;
pub mod rollout;
pub mod run;
pub mod sft;
pub mod state;
