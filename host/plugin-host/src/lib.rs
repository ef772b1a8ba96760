//! The sandboxed WebAssembly component host for lmmhost plugins.
//!
//! One wasmtime [`Engine`](wasmtime::Engine) per process ([`PluginRuntime`]),
//! an on-disk cache of compiled components ([`cache`]), a sandbox per
//! instance ([`sandbox`]) and one thin host per WIT version (`v0_1_0`, `v0_2_0`).
//! [`RewardPlugin`], [`LoaderPlugin`] and [`SchedulePlugin`] are what the CLI
//! and the trainer use; their boundary types are the SDK's plain Rust types.

/// Implements a world's `log` import (the same in every contract version).
macro_rules! log_import {
    ($world:ident) => {
        impl $world::lmmhost::plugin::log::Host for State {
            fn log(
                &mut self,
                level: $world::lmmhost::plugin::log::Level,
                message: String,
                fields: Vec<(String, String)>,
            ) {
                use $world::lmmhost::plugin::log::Level;
                let level = match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                self.emit(level, message, fields);
            }
        }
    };
}

pub mod bench;
pub mod cache;
mod convert;
pub mod loader;
pub mod reward;
pub mod runtime;
pub mod sandbox;
pub mod schedule;
mod v0_1_0;
mod v0_2_0;

pub use loader::LoaderPlugin;
pub use reward::{ItemOutcome, RewardPlugin};
pub use runtime::{Limits, LogRecord, LogSink, OnError, PluginRuntime, PluginSpec, RuntimeOptions};
pub use schedule::SchedulePlugin;
