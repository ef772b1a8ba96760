//! The experiment file: one TOML document that names the model, the plugins,
//! the datasets, the schedule and every setting of the run. Parsed with serde
//! (unknown keys and wrong types are errors that name the key and line), then
//! checked as a whole before any model is loaded.
//!
//! - `schema.rs`: the sections and their defaults;
//! - `load.rs`: reading a file, `extends` and path rebasing;
//! - `validate.rs`: the checks of the whole file;
//! - `schedule_metrics.rs`: the eval metrics the schedule's conditions read;
//! - `stage.rs`: the settings of one stage (the plan's overrides applied).

mod load;
mod schedule_metrics;
mod schema;
#[cfg(test)]
mod schema_keys;
mod stage;
#[cfg(test)]
mod test_files;
mod validate;

pub use load::merge_tables;
pub use schema::*;
pub use stage::{OverrideKey, StageSettings, OVERRIDE_KEYS};
pub use validate::{range_of, range_problems, Bound, Range, RANGES};
