//! The host side of `lmmhost:plugin@0.1.0`: bindings for the three worlds,
//! the `log` import, and conversions to and from the SDK's plain types.
//! The current contract is `v0_2_0`; this one stays so that plugins built
//! against 0.1.x keep loading.

use crate::sandbox::State;

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
