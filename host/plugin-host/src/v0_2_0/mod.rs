//! The host side of `lmmhost:plugin@0.2.0`: bindings for the three worlds,
//! the `log` import, and conversions to and from the SDK's plain types.
//! The newest contract: rewards take groups and return score columns
//! (wit/v0.2.0/reward.wit); loader and schedule are as in 0.1.0.

use crate::sandbox::State;

pub mod reward {
    // Borrowed parameter types: groups are lowered straight from the SDK's
    // groups (`convert::v0_2_0_in`), without copying every string first.
    wasmtime::component::bindgen!({
        path: "../../wit/v0.2.0",
        world: "reward-plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}
log_import!(reward);
// The shared types interface has no functions to provide.
impl reward::lmmhost::plugin::types::Host for State {}

pub mod loader {
    wasmtime::component::bindgen!({ path: "../../wit/v0.2.0", world: "loader-plugin" });
}
log_import!(loader);
impl loader::lmmhost::plugin::types::Host for State {}

pub mod schedule {
    wasmtime::component::bindgen!({ path: "../../wit/v0.2.0", world: "schedule-plugin" });
}
log_import!(schedule);
