//! The settings the papers' recipes rely on, end to end on the tiny
//! char-qwen2: which model the KL penalty compares with, several updates
//! per rollout batch, rates laid over the stage's optimizer updates, and
//! over-long inputs reported or refused.

mod train_support;

use std::process::Command;

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::{run, RunOptions};
use train_support::*;

const SFT_THEN_RL: &str = r#"
[[stages]]
name = "cold-start"
kind = "sft"
datasets = { sft = 1.0 }
steps = 4

[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
[stages.overrides]
kl_coef = 0.05
"#;

/// After a cold start, the RL stage's KL compares the policy with the model
/// the stage started from (verl, EasyR1 and OpenRLHF start RL from the SFT
/// checkpoint and freeze a copy of it): at the stage's first update the two
/// are the same model, so the KL is 0. With `reference = "initial"` it is the
/// model the run loaded, which the cold start moved away from.
#[test]
fn kl_reference_is_the_stage_start_unless_the_initial_model_is_asked_for() {
    let mut kls = Vec::new();
    for extra in ["", "[grpo.kl]\nreference = \"initial\"\n"] {
        let dir = tempfile::tempdir().unwrap();
        let path = experiment(
            dir.path(),
            SFT_THEN_RL,
            &format!("[sft]\nbatch_size = 12\n{extra}"),
        );
        let exp = Experiment::load(&path).unwrap();
        let summary = run(&exp, &RunOptions::default()).unwrap();
        let recs = steps(&summary.output_dir);
        assert_eq!(recs.len(), 6);
        assert_eq!(recs[4].stage, "rl");
        kls.push(recs[4].values["kl"]);
        // The stage's starting model is kept where a resumed run finds it.
        let saved = summary.output_dir.join("references/rl/config.json");
        assert_eq!(saved.is_file(), extra.is_empty(), "{}", saved.display());
    }
    let (stage_start, initial) = (kls[0], kls[1]);
    assert!(
        stage_start.abs() < 1e-7,
        "KL to the stage's start: {stage_start}"
    );
    assert!(initial > 1e-3, "KL to the initial model: {initial}");
}

/// Four optimizer updates per rollout batch at a high learning rate: from
/// the second update on the policy has moved away from the rollout's, the
/// ratio leaves [0.8, 1.2] and the clip engages.
#[test]
fn several_updates_per_batch_engage_the_clip() {
    let stages = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
[stages.overrides]
learning_rate = 1e-2
extra = { "optim.updates_per_batch" = 4 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(dir.path(), stages, "")).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    let recs = steps(&summary.output_dir);
    // A step whose groups all agree has nothing to move the policy with.
    let learning: Vec<f64> = recs
        .iter()
        .filter(|r| r.values["samples/zero_advantage"] < r.values["samples/generated"])
        .map(|r| r.values["clip_fraction"])
        .collect();
    assert!(!learning.is_empty(), "no step had a non-zero advantage");
    assert!(
        learning.iter().all(|c| *c > 0.0),
        "clip fractions of the steps with advantages: {learning:?}"
    );
}

/// Warmup as a ratio of the stage, a cosine that ends with the stage, and
/// the entropy bonus's warmup and decay all count optimizer updates (2 per
/// step here): the logged rates are those of each step's first update.
#[test]
fn rates_follow_the_stage_optimizer_updates() {
    let stages = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 4
[stages.overrides]
learning_rate = 1e-3
entropy_coef = 0.02
entropy_warmup_steps = 3
entropy_decay = 0.5
extra = { "optim.updates_per_batch" = 2, "optim.lr_decay" = "cosine", "optim.warmup_ratio" = 0.25 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(dir.path(), stages, "")).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    let recs = steps(&summary.output_dir);
    // 4 steps x 2 updates = 8; warmup ceil(0.25 * 8) = 2 updates, then the
    // cosine over updates 2..8. Step k starts at update 2(k - 1).
    let lr: Vec<f64> = recs.iter().map(|r| r.values["lr"]).collect();
    let want_lr = [0.5e-3, 1e-3, 0.75e-3, 0.25e-3];
    for (got, want) in lr.iter().zip(want_lr) {
        assert!(
            (got - want).abs() < 1e-12,
            "lr {lr:?}, expected {want_lr:?}"
        );
    }
    // 0 for 3 updates, then 0.02 halved per update: updates 0, 2, 4, 6.
    let ent: Vec<f64> = recs.iter().map(|r| r.values["entropy_coef"]).collect();
    let want_ent = [0.0, 0.0, 0.01, 0.0025];
    for (got, want) in ent.iter().zip(want_ent) {
        assert!(
            (got - want).abs() < 1e-12,
            "entropy_coef {ent:?}, expected {want_ent:?}"
        );
    }
}

/// Rows whose prompt (or SFT conversation) is over the limit: each is
/// counted, the first are reported with sample id, dataset, token count and
/// limit; with `long_prompts = "error"` the run stops at the first.
#[test]
fn long_inputs_are_reported_or_refused() {
    let stages = r#"
[[stages]]
name = "warm"
kind = "sft"
datasets = { sft = 0.5, long = 0.5 }
steps = 1

[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 0.5, long = 0.5 }
steps = 2
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = experiment(
        dir.path(),
        stages,
        "[sft]\nbatch_size = 8\nmax_tokens = 200\n",
    );
    // A dataset of questions far longer than the limits.
    let long = dir.path().join("long.jsonl");
    let mut rows = String::new();
    for i in 0..4 {
        let q = format!("Say a digit. {}", "Think carefully. ".repeat(20 + i));
        let msgs = serde_json::json!([
            {"role": "user", "content": q},
            {"role": "assistant", "content": "7"},
        ]);
        rows.push_str(&serde_json::json!({"messages": msgs, "answer": "7"}).to_string());
        rows.push('\n');
    }
    std::fs::write(&long, rows).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[schedule]",
            &format!(
                "[datasets.long]\nloader = \"jsonl\"\nfiles = [\"{}\"]\n\n[schedule]",
                long.display()
            ),
        )
        .replace(
            "max_response_tokens = 6",
            "max_response_tokens = 6\nmax_prompt_tokens = 200",
        );
    std::fs::write(&path, &text).unwrap();
    let lmmhost = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lmmhost"))
            .arg("run")
            .arg(&path)
            .args(args)
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = lmmhost(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("conversation of sample \"long.jsonl:")
            && err.contains("(dataset long) has")
            && err.contains("over sft.max_tokens = 200: skipped"),
        "{err}"
    );
    assert!(
        err.contains("prompt of sample \"long.jsonl:")
            && err.contains("over rollout.max_prompt_tokens = 200: skipped"),
        "{err}"
    );
    let recs = steps(&dir.path().join("run"));
    assert!(recs[0].values["sft/skipped_long"] > 0.0);
    let skipped: f64 = recs[1..]
        .iter()
        .map(|r| r.values["samples/skipped_long_prompts"])
        .sum();
    assert!(skipped > 0.0);
    // At most five are reported one by one; the rest are counted.
    assert!(err.matches(": skipped").count() <= 5, "{err}");

    std::fs::write(
        &path,
        text.replace(
            "max_prompt_tokens = 200",
            "max_prompt_tokens = 200\nlong_prompts = \"error\"",
        )
        .replace("max_tokens = 200", "max_tokens = 2000"),
    )
    .unwrap();
    let out = lmmhost(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("prompt of sample \"long.jsonl:")
            && err.contains("over rollout.max_prompt_tokens = 200")
            && err.contains("rollout.long_prompts = \"skip\""),
        "{err}"
    );
}

/// `lmmhost check` opens everything a run opens before the model (settings,
/// plugins, datasets) and names what is wrong; `--set` changes a setting
/// for `check` and `run` alike, its relative paths read from the current
/// directory.
#[test]
fn check_and_set_on_the_command_line() {
    let stages = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 1
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = experiment(dir.path(), stages, "");
    let lmmhost = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lmmhost"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let file = path.to_str().unwrap();
    let ok = lmmhost(&["check", file]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("dataset digits:") && stdout.contains("ok:"),
        "{stdout}"
    );

    // A dataset file that is not there, set from the command line.
    let bad = lmmhost(&[
        "check",
        file,
        "--set",
        r#"datasets.digits.files=["missing.jsonl"]"#,
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
    // An unknown key is refused with the key's name.
    let bad = lmmhost(&["check", file, "--set", "rollout.group_sise=4"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("group_sise"),
        "{stderr}"
    );
    // A model directory without config.json (the run's directory).
    let bad = lmmhost(&[
        "check",
        file,
        "--set",
        "model.init=pretrained",
        "--set",
        "model.path=.",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("config.json"),
        "{stderr}"
    );

    // `run --set` writes where the setting says, relative to the current directory.
    let run = lmmhost(&["run", file, "--set", "output_dir=elsewhere"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(dir.path().join("elsewhere/metrics.jsonl").is_file());
}

/// A stage measured in epochs counts steps of its own kind: one SFT epoch
/// over the 36 worked answers at `sft.batch_size` 5 is ceil(36 / 5) = 8
/// steps (not 36 / 8 prompts per step), one GRPO epoch over the 32 digit
/// rows at 8 prompts per step ceil(32 / 8) = 4; a stage's own
/// `sft.batch_size` override counts too (36 / 12 = 3).
#[test]
fn epochs_count_sft_steps_in_the_sft_batch() {
    let stages = |sft_extra: &str| {
        format!(
            "[[stages]]\nname = \"sft\"\nkind = \"sft\"\ndatasets = {{ sft = 1.0 }}\nepochs = 1\n\
             [stages.overrides]\nextra = {{ {sft_extra} }}\n\
             [[stages]]\nname = \"rl\"\nkind = \"grpo\"\ndatasets = {{ digits = 1.0 }}\nepochs = 1\n"
        )
    };
    let per_stage = |stages: &str| {
        let dir = tempfile::tempdir().unwrap();
        let exp =
            Experiment::load(&experiment(dir.path(), stages, "[sft]\nbatch_size = 5\n")).unwrap();
        let summary = run(&exp, &RunOptions::default()).unwrap();
        let recs = steps(&summary.output_dir);
        ["sft", "rl"].map(|s| recs.iter().filter(|r| r.stage == s).count())
    };
    assert_eq!(per_stage(&stages("")), [8, 4]);
    assert_eq!(per_stage(&stages("\"sft.batch_size\" = 12")), [3, 4]);
}
