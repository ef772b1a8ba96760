//! The schedule world: a trait for stage schedules and the macro that exports one.

use crate::types::{Plan, TrainState};

/// A stage schedule: decides, step by step, which stage runs and how.
pub trait Schedule: Sized + 'static {
    /// Builds the schedule from the plugin's TOML table, passed as TOML text.
    fn new(config: &str) -> Result<Self, String>;

    /// The plan for the next optimizer step, or `None` when training is done.
    fn next_plan(&mut self, state: &TrainState) -> Result<Option<Plan>, String>;

    /// The schedule's own state (opaque to the host), saved with checkpoints.
    fn save_state(&self) -> Vec<u8>;

    /// Restores what [`Schedule::save_state`] returned, on resume.
    fn load_state(&mut self, state: &[u8]) -> Result<(), String>;
}

/// Exports a [`Schedule`] type as the `schedule` interface of the component.
/// Needs the SDK's `schedule` cargo feature.
#[cfg(feature = "schedule")]
#[macro_export]
macro_rules! export_schedule {
    ($ty:ty) => {
        // Native builds of a plugin crate (tests, clippy) export nothing: the
        // component export names are not valid native linker symbols. The
        // reference keeps the plugin type from counting as dead code there.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::Schedule>::new;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct LmmhostScheduleExport;
            impl $crate::bindings::schedule::exports::lmmhost::plugin::schedule::Guest
                for LmmhostScheduleExport
            {
                fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::schedule::__glue::init::<$ty>(&STATE, &config)
                }
                fn next_plan(
                    state: $crate::types::TrainState,
                ) -> ::core::result::Result<::core::option::Option<$crate::types::Plan>, ::std::string::String> {
                    $crate::schedule::__glue::next_plan::<$ty>(&STATE, &state)
                }
                fn save_state() -> ::std::vec::Vec<u8> {
                    $crate::schedule::__glue::save_state::<$ty>(&STATE)
                }
                fn load_state(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::schedule::__glue::load_state::<$ty>(&STATE, &state)
                }
            }
            $crate::bindings::schedule::__lmmhost_export_schedule_world!(LmmhostScheduleExport with_types_in $crate::bindings::schedule);
        };
    };
}

#[doc(hidden)]
pub mod __glue {
    use super::Schedule;
    use crate::types::{Plan, TrainState};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    type State<T> = LocalKey<RefCell<Option<T>>>;

    const NOT_INIT: &str = "schedule plugin used before `init`";

    pub fn init<T: Schedule>(state: &'static State<T>, config: &str) -> Result<(), String> {
        let schedule = T::new(config)?;
        state.with(|s| *s.borrow_mut() = Some(schedule));
        Ok(())
    }

    pub fn next_plan<T: Schedule>(
        state: &'static State<T>,
        train: &TrainState,
    ) -> Result<Option<Plan>, String> {
        state.with(|s| match &mut *s.borrow_mut() {
            Some(sch) => sch.next_plan(train),
            None => Err(NOT_INIT.to_owned()),
        })
    }

    /// Empty before `init`: there is no state to save yet.
    pub fn save_state<T: Schedule>(state: &'static State<T>) -> Vec<u8> {
        state.with(|s| s.borrow().as_ref().map(T::save_state).unwrap_or_default())
    }

    pub fn load_state<T: Schedule>(state: &'static State<T>, bytes: &[u8]) -> Result<(), String> {
        state.with(|s| match &mut *s.borrow_mut() {
            Some(sch) => sch.load_state(bytes),
            None => Err(NOT_INIT.to_owned()),
        })
    }
}
