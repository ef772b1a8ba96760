//! The reward world: a trait for reward rules and the macro that exports one.

use crate::types::{Completion, Score};

/// A reward rule. The host creates an instance per worker with the same config
/// and calls [`Reward::score_batch`] with batches of completions.
///
/// Errors are strings shown to the user: name the config key or what is wrong
/// with the completion.
pub trait Reward: Sized + 'static {
    /// Builds the rule from the plugin's TOML table, passed as TOML text
    /// (`""` when the experiment gives no table).
    fn new(config: &str) -> Result<Self, String>;

    /// Scores one completion.
    fn score(&self, completion: &Completion) -> Result<Score, String>;

    /// Scores a batch, one result per completion, in order. Override it to
    /// share work across a batch; an error on one item must not fail the others.
    fn score_batch(&self, batch: &[Completion]) -> Vec<Result<Score, String>> {
        batch.iter().map(|c| self.score(c)).collect()
    }
}

/// Exports a [`Reward`] type as the `reward` interface of the component.
///
/// ```ignore
/// struct MyRule;
/// impl lmmhost_sdk::Reward for MyRule { /* ... */ }
/// lmmhost_sdk::export_reward!(MyRule);
/// ```
///
/// Needs the SDK's `reward` cargo feature and the `wasm32-wasip2` target.
#[cfg(feature = "reward")]
#[macro_export]
macro_rules! export_reward {
    ($ty:ty) => {
        // Native builds of a plugin crate (tests, clippy) export nothing: the
        // component export names are not valid native linker symbols. The
        // reference keeps the plugin type from counting as dead code there.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::Reward>::new;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct LmmhostRewardExport;
            impl $crate::bindings::reward::exports::lmmhost::plugin::reward::Guest
                for LmmhostRewardExport
            {
                fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::reward::__glue::init::<$ty>(&STATE, &config)
                }
                fn score_batch(
                    batch: ::std::vec::Vec<$crate::types::Completion>,
                ) -> ::std::vec::Vec<::core::result::Result<$crate::types::Score, ::std::string::String>> {
                    $crate::reward::__glue::score_batch::<$ty>(&STATE, &batch)
                }
            }
            $crate::bindings::reward::__lmmhost_export_reward_world!(LmmhostRewardExport with_types_in $crate::bindings::reward);
        };
    };
}

#[doc(hidden)]
pub mod __glue {
    use super::Reward;
    use crate::types::{Completion, Score};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    type State<T> = LocalKey<RefCell<Option<T>>>;

    pub fn init<T: Reward>(state: &'static State<T>, config: &str) -> Result<(), String> {
        let rule = T::new(config)?;
        state.with(|s| *s.borrow_mut() = Some(rule));
        Ok(())
    }

    pub fn score_batch<T: Reward>(
        state: &'static State<T>,
        batch: &[Completion],
    ) -> Vec<Result<Score, String>> {
        state.with(|s| match &*s.borrow() {
            Some(rule) => rule.score_batch(batch),
            None => batch
                .iter()
                .map(|_| Err("reward plugin used before `init`".to_owned()))
                .collect(),
        })
    }
}
