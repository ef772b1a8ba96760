//! The host speaks every contract version it lists (`HOST_WIT_VERSIONS`):
//! components built against 0.1.0 (loader, schedule and reward fixtures made
//! with wit-bindgen straight from wit/v0.1.0) load and answer as before, and
//! a 0.1.0 reward scores exactly what its 0.2.0 build scores.

use std::sync::Arc;

use lmmhost_plugin_host::{
    LoaderPlugin, OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions, SchedulePlugin,
};
use lmmhost_sdk::{ContentPart, Group, ImageSource, StageKind, TrainState};
use lmmhost_tests::plugin_wasm;

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap()
}

fn spec(name: &str, config: &str) -> PluginSpec {
    let mut s = PluginSpec::from_file(name, &plugin_wasm(name), config).unwrap();
    s.limits.instances = Some(2);
    s.log = Arc::new(|_| {});
    s
}

#[test]
fn a_0_1_reward_scores_exactly_as_its_0_2_build() {
    let rt = runtime();
    let config = "format = \"r1\"\n";
    // Groups of several sizes (GRPO groups, a lone response, an empty group),
    // a third of the answers wrong, and a sample without a reference answer,
    // which the rule refuses per item.
    let batch = lmmhost_sdk::bench::synthetic_completions(600, 300, 8);
    let mut groups = Group::from_completions(&batch[..576]);
    groups.extend(
        Group::from_completions(&batch[576..])
            .into_iter()
            .map(|mut g| {
                g.ends.truncate(1);
                g.tokens.truncate(1);
                g.responses.truncate(g.ends[0] as usize);
                g
            }),
    );
    groups.push(Group::new(batch[0].sample.clone()));
    let mut no_answer = Group::new(batch[8].sample.clone());
    no_answer.sample.answer = None;
    no_answer.push("\\boxed{1}", 3);
    no_answer.push("<think>x</think><answer>\\boxed{1}</answer>", 9);
    groups.insert(5, no_answer);
    let items: usize = groups.iter().map(Group::len).sum();

    let mut legacy_spec = spec("contract-v0-1-reward", config);
    legacy_spec.on_error = OnError::Zero;
    let legacy = RewardPlugin::new(&rt, legacy_spec).unwrap();
    let mut current_spec = spec("reward-math", config);
    current_spec.on_error = OnError::Zero;
    let current = RewardPlugin::new(&rt, current_spec).unwrap();
    assert_eq!(legacy.facts().wit_version.as_deref(), Some("0.1.0"));
    assert_eq!(current.facts().wit_version.as_deref(), Some("0.2.0"));
    let a = legacy.score_groups(&groups).unwrap();
    let b = current.score_groups(&groups).unwrap();
    assert_eq!(a.len(), items);
    assert_eq!(b.len(), items);
    let mut correct = 0;
    for i in 0..items {
        assert_eq!(a.item(i), b.item(i), "item {i}");
        correct += usize::from(b.total(i) > 1.0);
    }
    assert_eq!(b.failures.len(), 2, "the two responses without a reference");
    assert_eq!(b.failures[0].0, 40, "after five groups of 8");
    assert!(b.failures[0].1.contains("answer"), "{:?}", b.failures);
    assert!(correct > items / 2, "{correct} of {items} correct");
}

#[test]
fn a_0_1_loader_serves_samples() {
    let rt = runtime();
    let loader = LoaderPlugin::new(&rt, spec("contract-v0-1-loader", "n = 5")).unwrap();
    assert_eq!(loader.len(), 5);
    assert_eq!(loader.info().notes, ["0 granted paths"]);
    let got = loader.get_many(&[4, 0]).unwrap();
    assert_eq!(got[0].id, "legacy-4");
    assert_eq!(got[0].answer.as_deref(), Some("5"));
    assert_eq!(
        got[0].metadata,
        [("source".to_string(), "v0.1.0".to_string())]
    );
    assert_eq!(
        got[0].messages[0].content,
        [
            ContentPart::Image(ImageSource::Bytes(vec![4, 1, 2])),
            ContentPart::Text("What is 4 + 1?".into())
        ]
    );
    assert_eq!(got[1].id, "legacy-0");
    let err = format!("{:#}", loader.get(7).unwrap_err());
    assert!(err.contains("index 7 is out of range"), "{err}");
    let err = format!(
        "{:#}",
        LoaderPlugin::new(&rt, spec("contract-v0-1-loader", "m = 1"))
            .err()
            .unwrap()
    );
    assert!(
        err.contains("open failed: config must be `n = <count>`"),
        "{err}"
    );
}

#[test]
fn a_0_1_schedule_plans_saves_and_restores() {
    let rt = runtime();
    let mut s = SchedulePlugin::new(&rt, spec("contract-v0-1-schedule", "")).unwrap();
    let state = |step: u64| TrainState {
        global_step: step,
        ..TrainState::default()
    };
    let first = s.next_plan(&state(0)).unwrap().unwrap();
    assert_eq!(
        (first.stage.as_str(), first.kind),
        ("warmup", StageKind::Sft)
    );
    assert_eq!(first.overrides.learning_rate, Some(1e-5));
    assert_eq!(first.overrides.kl_coef, None);
    assert_eq!(first.datasets, [("math".to_string(), 1.0)]);
    s.next_plan(&state(1)).unwrap().unwrap();
    let saved = s.save_state().unwrap();
    let third = s.next_plan(&state(2)).unwrap().unwrap();
    assert_eq!((third.stage.as_str(), third.kind), ("rl", StageKind::Grpo));
    assert_eq!(third.overrides.kl_coef, Some(0.0));
    assert_eq!(
        third.overrides.extra,
        [("seen.step".to_string(), "2".to_string())]
    );

    // A fresh instance resumed from the saved state continues where it was.
    let mut resumed = SchedulePlugin::new(&rt, spec("contract-v0-1-schedule", "")).unwrap();
    resumed.load_state(&saved).unwrap();
    assert_eq!(resumed.next_plan(&state(2)).unwrap(), Some(third));
    for step in 3..5 {
        assert!(resumed.next_plan(&state(step)).unwrap().is_some());
    }
    assert_eq!(resumed.next_plan(&state(5)).unwrap(), None);
    let err = format!("{:#}", resumed.load_state(&[1, 2]).unwrap_err());
    assert!(err.contains("expected 8 bytes"), "{err}");
}
