//! The sandboxed WebAssembly component host for lmmhost plugins.
//!
//! [`RewardPlugin`], [`LoaderPlugin`] and [`SchedulePlugin`] are what the CLI
//! and the trainer use; their boundary types are the SDK's plain Rust types.
//! Each module imports only those listed before it (`tests/layers.rs`
//! fails on any import cycle):
//!
//! - `log`: where plugin log lines go;
//! - `sandbox`: what an instance can reach and spend: the limits, their
//!   defaults and their enforcement, read-only grants, `on_error`;
//! - `spec`: everything needed to start a plugin ([`PluginSpec`]);
//! - `contract`: one folder per served WIT version (its bindings, its
//!   conversions, one implementation per world) and the table from a
//!   version to its folder;
//! - [`cache`], [`runtime`]: the engine, the epoch ticker, compiled components;
//! - `reward`, `loader`, `schedule`: pooling, budgets and failure isolation,
//!   the same for every contract version;
//! - [`bench`]: `lmmhost bench reward`.

pub mod bench;
pub mod cache;
mod contract;
mod loader;
mod log;
mod reward;
pub mod runtime;
mod sandbox;
mod schedule;
mod spec;

pub use loader::LoaderPlugin;
pub use log::{stderr_sink, LogRecord, LogSink};
pub use reward::{ItemOutcome, RewardPlugin};
pub use runtime::{PluginRuntime, RuntimeOptions};
pub use sandbox::{Limits, OnError};
pub use schedule::SchedulePlugin;
pub use spec::PluginSpec;
