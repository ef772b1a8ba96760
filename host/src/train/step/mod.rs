//! One training step as a sequence of named phases, one file each:
//!
//! - GRPO (`grpo.rs`): [`StepPlan`] (what the step needs, decided once) ->
//!   collect (rollout, scoring and log-probs over dynamic sampling's rounds)
//!   -> shape rewards (the KL penalty, when it goes in the reward) ->
//!   advantages (`rl::advantage`) -> select (PAD) -> update -> metrics;
//! - SFT (`sft.rs`): draw and encode conversations -> update -> metrics.
//!
//! A step returns its metrics as a typed record (`metrics.rs`), which the
//! loop writes under the names metrics.jsonl, TensorBoard and the plots use.

mod apply;
mod collect;
mod grad_sum;
mod grpo;
mod logprobs;
mod metrics;
mod overlap;
mod plan;
mod select;
mod sft;
mod shape;
mod update;

pub(crate) use grpo::grpo_step;
pub use logprobs::{rows_logprobs, shared_response_stats, LogprobPass};
pub use metrics::{combine_ranks, GrpoMetrics, GrpoTimes, RewardStats, SampleCounts, SftMetrics};
pub use plan::{stage_rates, StepPlan};
pub use select::PadStats;
pub(crate) use sft::sft_step;
pub use update::{update, LossKl, UpdateInputs, UpdateStats};
