//! The reward world: a trait for reward rules and the macro that exports one.

use crate::batch::{Group, ScoreTable};
use crate::types::{Completion, Score};

/// A reward rule. The host creates an instance per worker with the same
/// config and sends it the groups of a batch (the responses sampled for one
/// prompt), a run of whole groups per call.
///
/// Each call goes through [`Reward::score_groups`], whose default calls
/// [`Reward::score_group`] on each group, whose default calls
/// [`Reward::score`] on each response: override the level at which your rule
/// shares work. Natively, [`score_completions`] takes the same path.
///
/// Errors are strings shown to the user: name the config key or what is wrong
/// with the completion.
pub trait Reward: Sized + 'static {
    /// Builds the rule from the plugin's TOML table, passed as TOML text
    /// (`""` when the experiment gives no table).
    fn new(config: &str) -> Result<Self, String>;

    /// Scores one completion.
    fn score(&self, completion: &Completion) -> Result<Score, String>;

    /// Scores every response of `group`, one result per response, in order.
    /// The default hands each response to [`Reward::score`] as a
    /// [`Completion`] that owns the group's sample (moved, not cloned).
    /// Override it to share work across a group, such as parsing the
    /// reference answer once.
    fn score_group(&self, group: Group) -> Vec<Result<Score, String>> {
        group.score_each(|c| self.score(c))
    }

    /// Scores the groups of one call: one item per response, group after
    /// group, in order (item `k` is the `k`-th response counting through the
    /// groups). The default is [`score_each_group`]. Override it to share
    /// work across the groups of a call (a cache of parsed references, one
    /// batched check); an error on one item must not fail the others. A call
    /// holds whole groups of up to a few hundred responses: the host splits a
    /// training batch across calls and instances, so no call sees it all.
    fn score_groups(&self, groups: Vec<Group>) -> ScoreTable {
        score_each_group(self, groups)
    }
}

/// [`Reward::score_groups`]'s default: each group through
/// [`Reward::score_group`]. A group answered with the wrong number of
/// results fails all its responses, so the items stay aligned with them.
pub fn score_each_group<R: Reward>(rule: &R, groups: Vec<Group>) -> ScoreTable {
    let items = groups.iter().map(Group::len).sum();
    let mut table = ScoreTable::with_capacity(items);
    for g in groups {
        let n = g.len();
        let results = rule.score_group(g);
        if results.len() == n {
            results.into_iter().for_each(|r| table.push(r));
        } else {
            let e = format!(
                "score_group returned {} results for {n} responses",
                results.len()
            );
            (0..n).for_each(|_| table.push(Err(e.clone())));
        }
    }
    table
}

/// Scores `batch` natively the way its plugin would: consecutive
/// completions of the same sample form a group, and the groups go through
/// [`Reward::score_groups`]. One result per completion, in order.
pub fn score_completions<R: Reward>(rule: &R, batch: &[Completion]) -> Vec<Result<Score, String>> {
    let table = rule.score_groups(Group::from_completions(batch));
    match table.validate(batch.len()) {
        Ok(()) => (0..table.len()).map(|i| table.item(i)).collect(),
        Err(e) => {
            let e = format!("score_groups returned a table that does not fit the call: {e}");
            batch.iter().map(|_| Err(e.clone())).collect()
        }
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

    /// One `score-groups` call: the rule's [`Reward::score_groups`], its
    /// items counted against the responses sent (a table of another length
    /// fails every item, with the reason, rather than the whole call).
    pub fn score_groups<T: Reward>(state: &'static State<T>, groups: Vec<Group>) -> ScoreTable {
        let items: usize = groups.iter().map(Group::len).sum();
        state.with(|s| match &*s.borrow() {
            Some(rule) => {
                let table = rule.score_groups(groups);
                if table.len() == items {
                    table
                } else {
                    failed(
                        items,
                        &format!(
                            "score_groups returned {} results for {items} responses",
                            table.len()
                        ),
                    )
                }
            }
            None => failed(items, "reward plugin used before `init`"),
        })
    }

    fn failed(items: usize, error: &str) -> ScoreTable {
        let mut table = ScoreTable::with_capacity(items);
        for _ in 0..items {
            table.push(Err(error.to_owned()));
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContentPart, Message, Sample};

    fn completion(id: &str, response: &str) -> Completion {
        Completion {
            sample: Sample {
                id: id.into(),
                messages: vec![Message {
                    role: "user".into(),
                    content: vec![ContentPart::Text("q".into())],
                }],
                answer: None,
                metadata: vec![],
            },
            response: response.into(),
            response_tokens: 1,
        }
    }

    fn score(total: f64) -> Score {
        Score {
            total,
            components: vec![],
        }
    }

    /// Scores a response by its length; `group` answers every group with
    /// one result too many, `batch` numbers the items of a call.
    struct Rule {
        group: bool,
        batch: bool,
    }

    impl Reward for Rule {
        fn new(_: &str) -> Result<Self, String> {
            Ok(Rule {
                group: false,
                batch: false,
            })
        }
        fn score(&self, c: &Completion) -> Result<Score, String> {
            Ok(score(c.response.len() as f64))
        }
        fn score_group(&self, group: Group) -> Vec<Result<Score, String>> {
            let mut out = group.score_each(|c| self.score(c));
            if self.group && out.len() > 1 {
                out.push(Ok(score(-1.0)));
            }
            out
        }
        fn score_groups(&self, groups: Vec<Group>) -> ScoreTable {
            if !self.batch {
                return score_each_group(self, groups);
            }
            let mut t = ScoreTable::default();
            for k in 0..groups.iter().map(Group::len).sum::<usize>() {
                t.push(Ok(score(100.0 + k as f64)));
            }
            t
        }
    }

    fn batch() -> Vec<Completion> {
        vec![
            completion("a", "x"),
            completion("a", "yy"),
            completion("b", "zzz"),
        ]
    }

    #[test]
    fn the_default_path_scores_each_response() {
        let rule = Rule::new("").unwrap();
        let out = score_completions(&rule, &batch());
        assert_eq!(out, [Ok(score(1.0)), Ok(score(2.0)), Ok(score(3.0))]);
    }

    #[test]
    fn an_overridden_score_groups_is_the_entry_point() {
        let rule = Rule {
            group: false,
            batch: true,
        };
        let out = score_completions(&rule, &batch());
        assert_eq!(out, [Ok(score(100.0)), Ok(score(101.0)), Ok(score(102.0))]);
    }

    #[test]
    fn a_misaligned_group_fails_its_own_responses_only() {
        let rule = Rule {
            group: true,
            batch: false,
        };
        let out = score_completions(&rule, &batch());
        for r in &out[..2] {
            let e = r.as_ref().unwrap_err();
            assert!(e.contains("3 results for 2 responses"), "{e}");
        }
        assert_eq!(out[2], Ok(score(3.0)), "group b has one response");
    }

    #[test]
    fn a_table_that_does_not_fit_fails_every_item() {
        struct Short;
        impl Reward for Short {
            fn new(_: &str) -> Result<Self, String> {
                Ok(Short)
            }
            fn score(&self, _: &Completion) -> Result<Score, String> {
                Ok(score(1.0))
            }
            fn score_groups(&self, _: Vec<Group>) -> ScoreTable {
                ScoreTable::default()
            }
        }
        let out = score_completions(&Short, &batch());
        assert_eq!(out.len(), 3);
        for r in out {
            assert!(r.unwrap_err().contains("does not fit"));
        }
    }
}
