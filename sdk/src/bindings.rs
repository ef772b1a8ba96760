//! wit-bindgen bindings, one module per world, each behind its cargo feature.
//!
//! A plugin enables exactly one feature (`reward`, `loader` or `schedule`), so
//! its component carries only that world's type information and exports only
//! that world's interface. The WIT types are mapped onto [`crate::types`]
//! (wit-bindgen's `with`), so values cross the boundary with no conversion.
//!
//! All paths are spelled `::lmmhost_sdk::...` because the generated export
//! macros expand inside the plugin crate, which depends on this SDK only.

#[cfg(feature = "reward")]
#[doc(hidden)]
pub mod reward {
    wit_bindgen::generate!({
        world: "reward-plugin",
        path: "wit",
        with: {
            "lmmhost:plugin/types@0.2.0": ::lmmhost_sdk::types,
            "lmmhost:plugin/reward@0.2.0/group": ::lmmhost_sdk::batch::Group,
            "lmmhost:plugin/reward@0.2.0/component": ::lmmhost_sdk::batch::ComponentValue,
            "lmmhost:plugin/reward@0.2.0/scores": ::lmmhost_sdk::batch::ScoreTable,
            "lmmhost:plugin/log@0.2.0": generate,
        },
        runtime_path: "::lmmhost_sdk::__wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__lmmhost_export_reward_world",
        default_bindings_module: "::lmmhost_sdk::bindings::reward",
    });
}

#[cfg(feature = "loader")]
#[doc(hidden)]
pub mod loader {
    wit_bindgen::generate!({
        world: "loader-plugin",
        path: "wit",
        with: {
            "lmmhost:plugin/types@0.2.0": ::lmmhost_sdk::types,
            "lmmhost:plugin/loader@0.2.0/dataset-info": ::lmmhost_sdk::types::DatasetInfo,
            "lmmhost:plugin/log@0.2.0": generate,
        },
        runtime_path: "::lmmhost_sdk::__wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__lmmhost_export_loader_world",
        default_bindings_module: "::lmmhost_sdk::bindings::loader",
    });
}

#[cfg(feature = "schedule")]
#[doc(hidden)]
pub mod schedule {
    wit_bindgen::generate!({
        world: "schedule-plugin",
        path: "wit",
        with: {
            "lmmhost:plugin/schedule@0.2.0/stage-kind": ::lmmhost_sdk::types::StageKind,
            "lmmhost:plugin/schedule@0.2.0/train-state": ::lmmhost_sdk::types::TrainState,
            "lmmhost:plugin/schedule@0.2.0/pad-overrides": ::lmmhost_sdk::types::PadOverrides,
            "lmmhost:plugin/schedule@0.2.0/overrides": ::lmmhost_sdk::types::Overrides,
            "lmmhost:plugin/schedule@0.2.0/plan": ::lmmhost_sdk::types::Plan,
            "lmmhost:plugin/log@0.2.0": generate,
        },
        runtime_path: "::lmmhost_sdk::__wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__lmmhost_export_schedule_world",
        default_bindings_module: "::lmmhost_sdk::bindings::schedule",
    });
}
