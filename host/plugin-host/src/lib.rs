//! The sandboxed WebAssembly component host for lmmhost plugins.
//!
//! One wasmtime [`Engine`](wasmtime::Engine) per process ([`PluginRuntime`]),
//! an on-disk cache of compiled components ([`cache`]), a sandbox per
//! instance ([`sandbox`]) and one thin host per WIT version (`v0_1_0`).
//! [`RewardPlugin`], [`LoaderPlugin`] and [`SchedulePlugin`] are what the CLI
//! and the trainer use; their boundary types are the SDK's plain Rust types.

pub mod bench;
pub mod cache;
mod convert;
pub mod loader;
pub mod reward;
pub mod runtime;
pub mod sandbox;
pub mod schedule;
mod v0_1_0;

pub use loader::LoaderPlugin;
pub use reward::{ItemOutcome, RewardPlugin};
pub use runtime::{Limits, LogRecord, LogSink, OnError, PluginRuntime, PluginSpec, RuntimeOptions};
pub use schedule::SchedulePlugin;
