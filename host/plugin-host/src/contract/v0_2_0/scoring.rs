//! Rewards in 0.2.0: each group crosses whole (its sample once, its
//! responses packed into one string) and the scores come back as columns,
//! which become the SDK's score table without a copy.

use lmmhost_sdk as sdk;
use wasmtime::Store;

use super::reward::exports::lmmhost::plugin::reward::{Group, Scores};
use super::reward::lmmhost::plugin::types as t;
use super::reward::RewardPlugin;
use crate::contract::shapes;
use crate::contract::worlds::RewardInstance;
use crate::sandbox::State;

shapes::sample_views!(t);

impl RewardInstance for RewardPlugin {
    fn score_call(&self) -> &'static str {
        "score-groups"
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
        let scores = with_sample_views(groups, |views| {
            let lowered: Vec<Group<'_>> = groups
                .iter()
                .zip(views)
                .map(|(g, sample)| Group {
                    sample,
                    responses: &g.responses,
                    ends: &g.ends,
                    tokens: &g.tokens,
                })
                .collect();
            self.lmmhost_plugin_reward()
                .call_score_groups(store, &lowered)
        })?;
        let table = table_from(scores);
        Ok(match table.validate(items) {
            Ok(()) => Ok(table),
            Err(e) => Err(format!("score-groups broke the contract: {e}")),
        })
    }
}

/// The SDK's score table from `scores`, every column moved (the caller
/// validates it against the number of items sent).
fn table_from(s: Scores) -> sdk::ScoreTable {
    sdk::ScoreTable {
        names: s.names,
        totals: s.totals,
        components: s
            .components
            .into_iter()
            .map(|c| sdk::ComponentValue {
                name: c.name,
                value: c.value,
            })
            .collect(),
        component_ends: s.component_ends,
        failures: s.failures,
    }
}
