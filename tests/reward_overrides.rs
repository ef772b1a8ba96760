//! A reward that overrides the SDK's `Reward::score_groups` or
//! `Reward::score_group` gets that override called inside its component:
//! the export glue enters through `score_groups`, whose default goes
//! through `score_group`, whose default goes through `score`.

use std::sync::Arc;

use lmmhost_plugin_host::{OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions};
use lmmhost_sdk::{Group, Sample, Score};
use lmmhost_tests::plugin_wasm;

/// One instance, so that a batch below 256 responses is one call.
fn plugin(mode: &str) -> RewardPlugin {
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let config = format!("mode = \"{mode}\"");
    let mut spec = PluginSpec::from_file(
        "reward-overrides",
        &plugin_wasm("reward-overrides"),
        &config,
    )
    .unwrap();
    spec.limits.instances = Some(1);
    spec.on_error = OnError::Zero;
    spec.log = Arc::new(|_| {});
    RewardPlugin::new(&rt, spec).unwrap()
}

/// Three groups of 2, 3 and 1 responses.
fn groups() -> Vec<Group> {
    [2, 3, 1]
        .iter()
        .enumerate()
        .map(|(g, &n)| {
            let mut group = Group::new(Sample {
                id: format!("s{g}"),
                ..Sample::default()
            });
            (0..n).for_each(|i| group.push(&format!("response {i}"), 2));
            group
        })
        .collect()
}

fn score(total: f64, components: &[(&str, f64)]) -> Score {
    Score {
        total,
        components: components
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    }
}

#[test]
fn an_overridden_score_groups_scores_the_whole_call() {
    let table = plugin("batch").score_groups(&groups()).unwrap();
    assert_eq!(table.len(), 6);
    assert!(table.failures.is_empty(), "{:?}", table.failures);
    for k in 0..6 {
        assert_eq!(
            table.item(k),
            Ok(score(
                2.0,
                &[("groups_in_call", 3.0), ("in_call", k as f64)]
            )),
            "item {k}"
        );
    }
}

#[test]
fn an_overridden_score_group_scores_each_group() {
    let table = plugin("group").score_groups(&groups()).unwrap();
    let want: Vec<Score> = [2, 3, 1]
        .iter()
        .flat_map(|&n| {
            (0..n).map(move |i| score(1.0, &[("group_size", n as f64), ("in_group", i as f64)]))
        })
        .collect();
    assert_eq!(table.len(), want.len());
    for (k, want) in want.into_iter().enumerate() {
        assert_eq!(table.item(k), Ok(want), "item {k}");
    }
}

#[test]
fn a_table_of_the_wrong_length_fails_every_item_with_the_reason() {
    let table = plugin("short").score_groups(&groups()).unwrap();
    assert_eq!(table.len(), 6);
    assert_eq!(table.failures.len(), 6);
    for (k, (item, e)) in table.failures.iter().enumerate() {
        assert_eq!(*item as usize, k);
        assert_eq!(e, "score_groups returned 5 results for 6 responses");
    }
}
