//! The lmmhost plugin SDK: traits and export macros for the reward, loader and
//! schedule worlds, the plain Rust mirrors of the WIT types, the reward rules
//! of the core plugins, and the answer-checking helpers every reward rule needs.
//!
//! A plugin crate enables the cargo feature of the world it implements
//! (`reward`, `loader` or `schedule`) and calls the matching export macro; see
//! `docs/writing-a-rust-plugin.md`.

// Lets generated code and the export macros name this crate `::lmmhost_sdk`
// whether they expand here or in a plugin crate.
extern crate self as lmmhost_sdk;

#[cfg(any(test, feature = "fast-alloc"))]
pub mod alloc;
pub mod answer;
pub mod batch;
#[doc(hidden)]
pub mod bench;
pub mod bindings;
pub mod loader;
pub mod log;
pub mod math;
pub mod reward;
#[cfg(feature = "rows")]
pub mod rows;
pub mod rules;
pub mod scan;
pub mod schedule;
pub mod types;

pub use batch::{ComponentValue, Group, ScoreTable};
pub use loader::Loader;
pub use reward::Reward;
pub use schedule::Schedule;
pub use types::*;

#[cfg(any(feature = "reward", feature = "loader", feature = "schedule"))]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

// A component instance is single-threaded: the lock-free small-block
// allocator is sound there, and it makes crossing the boundary cheaper.
#[cfg(all(target_arch = "wasm32", feature = "fast-alloc"))]
#[global_allocator]
static GLOBAL: alloc::PluginAlloc = alloc::PluginAlloc::new();
