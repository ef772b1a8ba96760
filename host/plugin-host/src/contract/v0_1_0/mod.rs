//! `lmmhost:plugin@0.1.0` (wit/v0.1.0/), still served so that plugins built
//! against it keep loading: a reward scores one completion per response
//! (`score-batch`, in scoring.rs); loader and schedule have the shapes
//! `contract::shapes` implements.

use crate::contract::shapes;

mod scoring;

pub mod reward {
    // Borrowed parameter types: a batch is lowered straight from the SDK's
    // groups (`scoring.rs`), without copying every string first.
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "reward-plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

pub mod loader {
    wasmtime::component::bindgen!({ path: "../../wit/v0.1.0", world: "loader-plugin" });
}

pub mod schedule {
    wasmtime::component::bindgen!({ path: "../../wit/v0.1.0", world: "schedule-plugin" });
}

shapes::serve_worlds!();
shapes::loader_world!(loader);
shapes::schedule_world!(schedule);
