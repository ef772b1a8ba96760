//! Rewards in 0.1.0: one completion per response, each with a view of its
//! group's sample, and one result per completion, which become the SDK's
//! score table (the trainer cannot tell the two versions apart).

use lmmhost_sdk as sdk;
use wasmtime::Store;

use super::reward::lmmhost::plugin::types as t;
use super::reward::RewardPlugin;
use crate::contract::shapes;
use crate::contract::worlds::RewardInstance;
use crate::sandbox::State;

shapes::sample_views!(t);

impl RewardInstance for RewardPlugin {
    fn score_call(&self) -> &'static str {
        "score-batch"
    }

    fn init(&self, store: &mut Store<State>, config: &str) -> wasmtime::Result<Result<(), String>> {
        self.lmmhost_plugin_reward().call_init(store, config)
    }

    fn score(
        &self,
        store: &mut Store<State>,
        groups: &[sdk::Group],
    ) -> wasmtime::Result<Result<sdk::ScoreTable, String>> {
        let items: usize = groups.iter().map(sdk::Group::len).sum();
        let list = with_sample_views(groups, |views| {
            let completions: Vec<t::Completion<'_>> = groups
                .iter()
                .zip(&views)
                .flat_map(|(g, sample)| {
                    (0..g.len()).map(move |i| t::Completion {
                        sample: sample.clone(),
                        response: g.response(i).unwrap_or_default(),
                        response_tokens: g.tokens(i),
                    })
                })
                .collect();
            self.lmmhost_plugin_reward()
                .call_score_batch(store, &completions)
        })?;
        if list.len() != items {
            return Ok(Err(format!(
                "score-batch returned {} results for {items} completions",
                list.len()
            )));
        }
        let mut table = sdk::ScoreTable::with_capacity(items);
        for item in list {
            table.push(item.map(|s| sdk::Score {
                total: s.total,
                components: s.components,
            }));
        }
        Ok(Ok(table))
    }
}
