//! Schedule plugin: stages listed in the config (SFT or GRPO), each with its
//! datasets and weights, a length in steps or epochs, an optional early
//! advance condition on a metric, and setting overrides.
//! Config reference: `docs/schedules.md`.

pub mod config;
pub mod staged;

#[cfg(test)]
mod tests;

pub use staged::Staged;

// Only in the component: the export symbols' names (`lmmhost:plugin/schedule@0.2.0#...`)
// are not valid in a native shared library's version script.
#[cfg(target_arch = "wasm32")]
lmmhost_sdk::export_schedule!(crate::staged::Staged);
