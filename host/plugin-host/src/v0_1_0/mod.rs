//! The host side of `lmmhost:plugin@0.1.0`: bindings for the three worlds,
//! the `log` import, and conversions to and from the SDK's plain types.
//! A future contract version gets a sibling module; this one stays so that
//! plugins built against 0.1.x keep loading.

use crate::sandbox::State;

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

pub mod reward {
    // Borrowed parameter types: a batch is lowered straight from the SDK's
    // completions (`convert::reward_in`), without copying every string first.
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "reward-plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}
log_import!(reward);
// The shared types interface has no functions to provide.
impl reward::lmmhost::plugin::types::Host for State {}

pub mod loader {
    wasmtime::component::bindgen!({ path: "../../wit/v0.1.0", world: "loader-plugin" });
}
log_import!(loader);
impl loader::lmmhost::plugin::types::Host for State {}

pub mod schedule {
    wasmtime::component::bindgen!({ path: "../../wit/v0.1.0", world: "schedule-plugin" });
}
log_import!(schedule);
