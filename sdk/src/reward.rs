//! The reward world: a trait for reward rules and the macro that exports one.

use crate::batch::Group;
use crate::types::{Completion, Score};

/// A reward rule. The host creates an instance per worker with the same config
/// and calls [`Reward::score_group`] for each group of responses (the
/// responses sampled for one prompt) of a batch.
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

    /// Scores every response of `group`, one result per response, in order.
    /// The default hands each response to [`Reward::score`] as a
    /// [`Completion`] that owns the group's sample (moved, not cloned).
    /// Override it to share work across a group, such as parsing the
    /// reference answer once.
    fn score_group(&self, group: Group) -> Vec<Result<Score, String>> {
        group.score_each(|c| self.score(c))
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
                fn score_groups(
                    groups: ::std::vec::Vec<$crate::batch::Group>,
                ) -> $crate::batch::ScoreTable {
                    $crate::reward::__glue::score_groups::<$ty>(&STATE, groups)
                }
            }
            $crate::bindings::reward::__lmmhost_export_reward_world!(LmmhostRewardExport with_types_in $crate::bindings::reward);
        };
    };
}

#[doc(hidden)]
pub mod __glue {
    use super::Reward;
    use crate::batch::{Group, ScoreTable};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    type State<T> = LocalKey<RefCell<Option<T>>>;

    pub fn init<T: Reward>(state: &'static State<T>, config: &str) -> Result<(), String> {
        let rule = T::new(config)?;
        state.with(|s| *s.borrow_mut() = Some(rule));
        Ok(())
    }

    pub fn score_groups<T: Reward>(state: &'static State<T>, groups: Vec<Group>) -> ScoreTable {
        let items = groups.iter().map(Group::len).sum();
        let mut table = ScoreTable::with_capacity(items);
        state.with(|s| match &*s.borrow() {
            Some(rule) => {
                for g in groups {
                    let n = g.len();
                    let results = rule.score_group(g);
                    if results.len() == n {
                        results.into_iter().for_each(|r| table.push(r));
                    } else {
                        // Keep the items aligned with the host's responses.
                        let e = format!(
                            "score_group returned {} results for {n} responses",
                            results.len()
                        );
                        (0..n).for_each(|_| table.push(Err(e.clone())));
                    }
                }
            }
            None => {
                for _ in 0..items {
                    table.push(Err("reward plugin used before `init`".to_owned()));
                }
            }
        });
        table
    }
}
