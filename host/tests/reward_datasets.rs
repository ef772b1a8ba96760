//! `[[rewards]] datasets = [...]`: each reward scores only its datasets'
//! samples (components keep each plugin's names), names it does not know are
//! refused with the key, and a GRPO stage drawing from a dataset no reward
//! scores is refused before it trains.

mod train_support;

use std::path::Path;

use lmmhost::train::experiment::Experiment;
use lmmhost::train::plugins::{score_all, Reward};
use lmmhost::train::run::{run, RunOptions};
use lmmhost_plugin_host::{PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions};
use lmmhost_sdk::{self as sdk, ContentPart, Message};
use train_support::*;

fn reward(
    rt: &PluginRuntime,
    plugin_file: &str,
    config: &str,
    datasets: Option<&[&str]>,
) -> Reward {
    let spec = PluginSpec::from_file(plugin_file, &plugin(plugin_file), config).unwrap();
    Reward {
        name: plugin_file.into(),
        weight: 1.0,
        datasets: datasets.map(|d| d.iter().map(|s| s.to_string()).collect()),
        plugin: RewardPlugin::new(rt, spec).unwrap(),
    }
}

fn group(id: &str, answer: &str, responses: &[&str]) -> sdk::Group {
    let mut g = sdk::Group::new(sdk::Sample {
        id: id.into(),
        messages: vec![Message {
            role: "user".into(),
            content: vec![ContentPart::Text("?".into())],
        }],
        answer: Some(answer.into()),
        metadata: Vec::new(),
    });
    for r in responses {
        g.push(r, 3);
    }
    g
}

#[test]
fn each_reward_scores_only_its_datasets() {
    let rt = PluginRuntime::new(RuntimeOptions::default()).unwrap();
    let math = "extract = [\"last_number\"]";
    let rewards = [
        reward(&rt, "reward-math", math, Some(&["digits"])),
        reward(&rt, "reward-choice", "", Some(&["letters"])),
    ];
    let groups = [
        group("d0", "7", &["7", "8"]),
        group("l0", "B", &["B", "7"]),
        group("d1", "7", &["so 7"]),
    ];
    let datasets: Vec<String> = ["digits", "letters", "digits"].map(String::from).to_vec();
    let scores = score_all(&rewards, &groups, &datasets).unwrap();
    let totals: Vec<f64> = scores.iter().map(|s| s.total).collect();
    // "7" is right for the digits rows (math) and wrong for the letter row
    // (choice): each row was scored by its own dataset's reward only.
    assert_eq!(totals, [1.0, 0.0, 1.0, 0.0, 1.0]);
    for s in &scores {
        let names: Vec<&str> = s.components.keys().map(String::as_str).collect();
        assert_eq!(names, ["accuracy"], "{s:?}");
    }
    // Alone, each plugin gives the same numbers for its own rows.
    let alone = score_all(&rewards[1..], &groups[1..2], &datasets[1..2]).unwrap();
    assert_eq!(alone, scores[2..4]);

    // Without `datasets` a reward scores every row: math gives the letter
    // row's right answer "B" nothing.
    let all = [reward(&rt, "reward-math", math, None)];
    let totals: Vec<f64> = score_all(&all, &groups, &datasets)
        .unwrap()
        .iter()
        .map(|s| s.total)
        .collect();
    assert_eq!(totals, [1.0, 0.0, 0.0, 0.0, 1.0]);
}

/// digits and letters datasets; math scores `math_on`, the choice reward letters.
fn two_rewards(dir: &Path, stages: &str, math_on: &str) -> std::path::PathBuf {
    let letters = dir.join("letters.jsonl");
    let rows: String = (0..8)
        .map(|i| format!("{{\"problem\": \"A or B ({i})?\", \"answer\": \"B\"}}\n"))
        .collect();
    std::fs::write(&letters, rows).unwrap();
    let settings = format!(
        "[plugins.choice]\nwasm = \"{}\"\nconfig = {{ format = \"r1\" }}\n\n[[rewards]]\nplugin = \"choice\"\ndatasets = [\"letters\"]\n\n\
         [rollout]\ngroup_size = 2\nprompts_per_step = 4\nmax_response_tokens = 4\n\n\
         [optim]\nmicro_batch_size = 8\n\n[logging]\nprogress = false\n",
        plugin("reward-choice").display()
    );
    let p = ExperimentFile {
        name: "two-rewards".into(),
        seed: 1,
        model: tiny_model(dir),
        math_config: r#"{ extract = ["last_number"] }"#.into(),
        datasets: vec![
            ("digits".into(), digit_dataset(dir)),
            ("letters".into(), letters),
        ],
        stages: stages.into(),
        settings,
    }
    .write(dir, "exp.toml", &dir.join("run").display().to_string());
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        "[[rewards]]\nplugin = \"math\"\n",
        &format!("[[rewards]]\nplugin = \"math\"\ndatasets = {math_on}\n"),
        1,
    );
    std::fs::write(&p, text).unwrap();
    p
}

const BOTH: &str = "[[stages]]\nname = \"rl\"\nkind = \"grpo\"\n\
                    datasets = { digits = 1.0, letters = 1.0 }\nsteps = 2\n";

/// Only the choice reward (configured with a format term) reports a
/// `format` component: steps that draw digits only have none, steps that
/// draw letters have it.
#[test]
fn a_run_scores_each_dataset_with_its_reward() {
    let stages = "[[stages]]\nname = \"digits\"\nkind = \"grpo\"\ndatasets = { digits = 1.0 }\nsteps = 2\n\
                  [[stages]]\nname = \"letters\"\nkind = \"grpo\"\ndatasets = { letters = 1.0 }\nsteps = 2\n";
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&two_rewards(dir.path(), stages, "[\"digits\"]")).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(summary.steps, 4);
    for r in steps(&summary.output_dir) {
        assert_eq!(
            r.values.get("reward/failures"),
            Some(&0.0),
            "{:?}",
            r.values
        );
        assert!(
            r.values.contains_key("reward/accuracy/mean"),
            "{:?}",
            r.values
        );
        assert_eq!(
            r.values.contains_key("reward/format/mean"),
            r.stage == "letters",
            "step {} of stage {}: {:?}",
            r.step,
            r.stage,
            r.values.keys()
        );
    }
}

#[test]
fn unknown_or_unscored_datasets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        Experiment::load(&two_rewards(dir.path(), BOTH, "[\"digit\"]")).unwrap_err()
    );
    assert!(
        err.contains(
            "rewards[0].datasets: no dataset named \"digit\" in [datasets] (have: digits, letters)"
        ),
        "{err}"
    );
    let err = format!(
        "{:#}",
        Experiment::load(&two_rewards(dir.path(), BOTH, "[]")).unwrap_err()
    );
    assert!(err.contains("rewards[0].datasets: empty"), "{err}");

    // The math reward scores letters only: nothing scores digits, and the
    // run stops at the stage's first plan, before any step.
    let exp = Experiment::load(&two_rewards(dir.path(), BOTH, "[\"letters\"]")).unwrap();
    let err = format!("{:#}", run(&exp, &RunOptions::default()).err().unwrap());
    assert!(
        err.contains(
            "stage \"rl\" (GRPO) draws from dataset digits that no [[rewards]] entry scores"
        ),
        "{err}"
    );
    assert!(
        !dir.path().join("run/metrics.jsonl").exists() || steps(&dir.path().join("run")).is_empty()
    );
}
