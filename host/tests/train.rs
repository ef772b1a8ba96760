//! The trainer end to end on CPU: a tiny random Qwen2 with the character
//! tokenizer (configs/models/char-qwen2), datasets through loader-jsonl, rewards
//! through reward-math, stages through schedule-staged, all as components.

mod train_support;

use std::path::Path;

use lmmhost::train::experiment::Experiment;
use lmmhost::train::plugins::Plugins;
use lmmhost::train::run::{run, RunOptions};
use train_support::*;

#[test]
fn grpo_raises_a_sparse_rule_reward() {
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(dir.path(), GRPO_ONLY, "")).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(summary.steps, 16);
    let recs = steps(&summary.output_dir);
    assert_eq!(recs.len(), 16);
    let first = mean(&recs[..4], "reward/mean");
    let last = mean(&recs[12..], "reward/mean");
    eprintln!("reward first 4 steps {first:.3}, last 4 {last:.3}");
    assert!(
        last > first + 0.25,
        "reward did not rise: first 4 steps {first:.3}, last 4 {last:.3}"
    );
    // Every step logged its split and the update's statistics.
    for r in &recs {
        for k in [
            "time/rollout",
            "time/reward",
            "time/update",
            "grad_norm",
            "clip_fraction",
            "entropy",
            "lr",
            "samples/effective",
            "response_length/mean",
        ] {
            assert!(r.values.contains_key(k), "step {} lacks {k}", r.step);
        }
        assert_eq!(r.values["samples/generated"], 64.0);
    }
    // The trained model loads back and the plots exist.
    let loaded =
        lmmhost_model::checkpoint::load(&summary.final_model, tch::Device::Cpu, tch::Kind::Float)
            .unwrap();
    assert!(loaded.source.unused.is_empty());
    for f in ["reward.png", "accuracy.png", "length.png"] {
        assert!(summary.output_dir.join("plots").join(f).is_file(), "{f}");
    }
    assert!(std::fs::read_dir(summary.output_dir.join("tensorboard"))
        .unwrap()
        .next()
        .is_some());
    // Without a KL penalty no reference model is made.
    assert!(!summary.output_dir.join("references").exists());
}

#[test]
fn sft_loss_falls_and_stages_switch_in_one_run() {
    let stages = r#"
[[stages]]
name = "cold-start"
kind = "sft"
datasets = { sft = 1.0 }
steps = 12

[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
[stages.overrides]
group_size = 4
learning_rate = 1e-4

[[stages]]
name = "rl-kl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
[stages.overrides]
kl_coef = 0.1
extra = { "grpo.kl.estimator" = "k2", "rollout.prompts_per_step" = 4 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let exp =
        Experiment::load(&experiment(dir.path(), stages, "[sft]\nbatch_size = 12\n")).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    let recs = steps(&summary.output_dir);
    let kinds: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r.stage.as_str(), r.kind.as_str()))
        .collect();
    assert_eq!(kinds.len(), 16);
    assert!(kinds[..12].iter().all(|k| *k == ("cold-start", "sft")));
    assert!(kinds[12..14].iter().all(|k| *k == ("rl", "grpo")));
    assert!(kinds[14..].iter().all(|k| *k == ("rl-kl", "grpo")));
    let sft = &recs[..12];
    let first = mean(&sft[..3], "sft/loss");
    let last = mean(&sft[9..], "sft/loss");
    assert!(
        last < 0.7 * first,
        "SFT loss did not fall: {first:.3} -> {last:.3}"
    );
    // Stage settings: group 4 x 8 prompts, then group 8 x 4 prompts with KL.
    assert_eq!(recs[12].values["samples/generated"], 32.0);
    assert!((recs[12].values["lr"] - 1e-4).abs() < 1e-12);
    assert!(!recs[12].values.contains_key("kl"));
    assert_eq!(recs[14].values["samples/generated"], 32.0);
    assert!(recs[14].values["kl"] >= 0.0);
}

#[test]
fn resumed_run_matches_an_uninterrupted_one_step_for_step() {
    let stages = r#"
[[stages]]
name = "warm"
kind = "sft"
datasets = { sft = 1.0 }
steps = 2

[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 4
"#;
    let extra = "[checkpoint]\nevery = 3\nkeep_last = 2\n[grpo.kl]\ncoef = 0.05\n";
    let a = tempfile::tempdir().unwrap();
    let exp_a = Experiment::load(&experiment(a.path(), stages, extra)).unwrap();
    let full = run(&exp_a, &RunOptions::default()).unwrap();

    let b = tempfile::tempdir().unwrap();
    let exp_b = Experiment::load(&experiment(b.path(), stages, extra)).unwrap();
    // Stopping at --max-steps writes a checkpoint (step 4); resume continues there.
    let resumed = stop_and_resume(&exp_b, 4);
    assert_eq!(resumed.steps, 6);
    assert!(resumed.warnings.is_empty(), "{:?}", resumed.warnings);
    let (ra, rb) = (steps(&full.output_dir), steps(&resumed.output_dir));
    assert_eq!(ra.len(), 6);
    assert_eq!(rb.len(), 6);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!((x.step, &x.stage), (y.step, &y.stage));
        assert_eq!(comparable(x), comparable(y), "step {} differs", x.step);
    }
    // The checkpoint holds what resume needs.
    let ck = b.path().join("run/checkpoints/step-00000006");
    for f in [
        "model/config.json",
        "model/model.safetensors",
        "optimizer.safetensors",
        "trainer.json",
    ] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer.json")).unwrap()).unwrap();
    assert_eq!(state["plugin_sha256"].as_object().unwrap().len(), 3);
    assert!(state["cursors"]["digits"]["pos"].as_u64().unwrap() > 0);

    // A plugin that changed since the checkpoint is reported with both hashes.
    let text = std::fs::read_to_string(b.path().join("exp.toml")).unwrap();
    let copy = b.path().join("math-rebuilt.wasm");
    let mut bytes = std::fs::read(plugin("reward-math")).unwrap();
    bytes.extend_from_slice(&[0, 8, 3, b'a', b'b', b'c', 1, 2, 3, 4]); // a custom section
    std::fs::write(&copy, bytes).unwrap();
    std::fs::write(
        b.path().join("exp.toml"),
        text.replace(
            &plugin("reward-math").display().to_string(),
            &copy.display().to_string(),
        ),
    )
    .unwrap();
    let exp_c = Experiment::load(&b.path().join("exp.toml")).unwrap();
    let again = run(
        &exp_c,
        &RunOptions {
            resume: true,
            max_steps: None,
        },
    )
    .unwrap();
    assert_eq!(again.steps, 6);
    assert_eq!(again.warnings.len(), 1, "{:?}", again.warnings);
    assert!(
        again.warnings[0].contains("plugin math changed since the checkpoint"),
        "{:?}",
        again.warnings
    );
}

#[test]
fn hot_reload_swaps_a_changed_plugin_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = experiment(dir.path(), GRPO_ONLY, "");
    // Watch a copy of the reward plugin.
    let watched = dir.path().join("watched.wasm");
    std::fs::copy(plugin("reward-math"), &watched).unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("wasm = \"{}\"", plugin("reward-math").display()),
        &format!("wasm = \"{}\"\nwatch = true", watched.display()),
    );
    std::fs::write(&path, text).unwrap();
    let exp = Experiment::load(&path).unwrap();
    let mut plugins = Plugins::start(&exp).unwrap();
    let before = plugins.hashes()["math"].clone();
    assert!(plugins.reload_changed(&exp).is_empty());

    std::fs::write(&watched, b"not a component").unwrap();
    let events = plugins.reload_changed(&exp);
    assert_eq!(events.len(), 1);
    assert!(events[0].contains("reload refused"), "{events:?}");
    assert_eq!(plugins.hashes()["math"], before);

    // A valid component that rejects the plugin's config is refused too.
    std::fs::copy(plugin("reward-format"), &watched).unwrap();
    let events = plugins.reload_changed(&exp);
    assert!(events[0].contains("init rejected the config"), "{events:?}");
    assert_eq!(plugins.hashes()["math"], before);

    // A new build of the rule (same code plus a custom section) is taken.
    let mut bytes = std::fs::read(plugin("reward-math")).unwrap();
    let name = b"lmmhost-test";
    let payload = b"rebuilt";
    bytes.push(0); // custom section id
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(&watched, &bytes).unwrap();
    let events = plugins.reload_changed(&exp);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("reloaded, sha256"), "{events:?}");
    let after = plugins.hashes()["math"].clone();
    assert_ne!(after, before);
    assert!(events[0].contains(&after));
    assert!(plugins.reload_changed(&exp).is_empty());
}

#[test]
fn bad_experiment_is_refused_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = experiment(dir.path(), GRPO_ONLY, "[grpo]\nclip_low = 1.5\n");
    std::fs::remove_dir_all(dir.path().join("model")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .args(["run"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.path"), "{err}");
    assert!(err.contains("grpo.clip_low"), "{err}");
}

#[test]
fn eval_command_reports_accuracy_pass_at_k_and_saves_answers() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let config = lmmhost_model::config::ModelConfig::from_dir(&model_dir).unwrap();
    let model = lmmhost_model::checkpoint::init_random_seeded(
        config,
        Some(&model_dir),
        tch::Device::Cpu,
        tch::Kind::Float,
        1,
    )
    .unwrap();
    let saved = dir.path().join("saved");
    lmmhost_model::checkpoint::save(&model, &saved, &Default::default()).unwrap();
    let data = digit_dataset(dir.path());
    let answers = dir.path().join("answers.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .arg("eval")
        .arg("--model")
        .arg(&saved)
        .arg("--dataset")
        .arg(&data)
        .arg("--loader")
        .arg(plugin("loader-jsonl"))
        .arg("--reward")
        .arg(plugin("reward-math"))
        .args(["--reward-config", "extract = [\"last_number\"]"])
        .args(["--samples", "4", "--temperature", "1.0", "--pass-k", "1,4"])
        .args(["--limit", "8", "--max-response-tokens", "6"])
        .arg("--out")
        .arg(&answers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pass@1") && stdout.contains("pass@4"),
        "{stdout}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&answers)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 32);
    // The table's accuracy is the share of correct answers in the file.
    let correct = lines.iter().filter(|l| l["correct"] == true).count() as f64 / 32.0;
    let row = stdout.lines().find(|l| l.contains("digits")).unwrap();
    let acc: f64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((acc - correct).abs() < 1e-3, "{row} vs {correct}");
    for l in &lines {
        assert_eq!(l["answer"], "7");
        assert!(l["components"]["accuracy"].is_number());
    }

    // Bad arguments are refused with the reason.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .arg("eval")
        .arg("--model")
        .arg(&saved)
        .arg("--dataset")
        .arg(&data)
        .args(["--samples", "2", "--pass-k", "4", "--temperature", "1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--pass-k 4"));
}

#[test]
fn pad_and_dynamic_sampling_shape_the_update_batch() {
    // PAD: keep ceil(0.25 * 64) = 16 completions when enough are eligible.
    let dir = tempfile::tempdir().unwrap();
    let stages = GRPO_ONLY.replace("steps = 16", "steps = 3");
    let exp = Experiment::load(&experiment(
        dir.path(),
        &stages,
        "[grpo.pad]\nenabled = true\nratio = 0.25\nt_low = 0.01\n",
    ))
    .unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    // The draw's temperature goes from tau_start to tau_end over the stage's
    // 3 steps (schedule-staged reports the stage's length).
    let taus = [1.0, 0.65, 0.3];
    for (r, tau) in steps(&summary.output_dir).iter().zip(taus) {
        let eligible = r.values["pad/eligible"];
        let kept = r.values["samples/effective"];
        assert_eq!(kept, eligible.min(16.0), "step {}", r.step);
        assert_eq!(
            eligible,
            64.0 - r.values["samples/zero_advantage"],
            "step {}",
            r.step
        );
        assert!((r.values["pad/tau"] - tau).abs() < 1e-12, "step {}", r.step);
    }

    // Dynamic sampling: only groups with differing accuracy are trained on,
    // within 1 + max_retries rounds of generation.
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(
        dir.path(),
        &stages,
        "[grpo.dynamic_sampling]\nenabled = true\nmax_retries = 2\n",
    ))
    .unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    for r in steps(&summary.output_dir) {
        let (rounds, groups) = (r.values["dynamic/rounds"], r.values["dynamic/groups"]);
        assert!(
            (1.0..=3.0).contains(&rounds),
            "step {}: {rounds} rounds",
            r.step
        );
        assert!(groups <= 8.0);
        assert_eq!(r.values["samples/generated"], 64.0 * rounds);
        assert_eq!(r.values["samples/effective"], 8.0 * groups);
        assert_eq!(r.values["samples/zero_advantage"], 0.0, "step {}", r.step);
        if groups < 8.0 {
            assert_eq!(
                rounds, 3.0,
                "step {}: stopped early with {groups} groups",
                r.step
            );
        }
    }
}

/// `model.workers = 2` (rollout rows, log-prob chunks and update
/// micro-batches on two threads) runs the same training as one worker: the
/// same samples and rewards, the other metrics equal up to float rounding.
#[test]
fn two_workers_train_like_one() {
    let stages = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 3
"#;
    let extra = "[grpo.kl]\ncoef = 0.05\n";
    let mut runs = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = experiment(dir.path(), stages, extra);
        let text = std::fs::read_to_string(&path).unwrap();
        // 64 rows in micro-batches of 10: 7 jobs, uneven over the workers.
        let text = text
            .replace(
                "threads = 1\n",
                &format!("threads = 2\nworkers = {workers}\n"),
            )
            .replace("micro_batch_size = 32", "micro_batch_size = 10");
        std::fs::write(&path, text).unwrap();
        let exp = Experiment::load(&path).unwrap();
        assert_eq!(exp.model.workers, workers);
        let summary = run(&exp, &RunOptions::default()).unwrap();
        runs.push((steps(&summary.output_dir), dir));
    }
    let (one, two) = (&runs[0].0, &runs[1].0);
    assert_eq!(one.len(), 3);
    assert_eq!(two.len(), 3);
    for (a, b) in one.iter().zip(two) {
        let (a, b) = (comparable(a), comparable(b));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, x) in &a {
            let y = b[k];
            if k.starts_with("reward") || k.starts_with("samples") || k.contains("length") {
                assert_eq!(*x, y, "{k}");
            } else {
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1e-3), "{k}: {x} vs {y}");
            }
        }
    }
}

/// The metric names each kind of step writes (the keys of metrics.jsonl,
/// which TensorBoard tags and the plots reuse), for every combination of
/// settings that adds or removes one: pinned, so that reshaping the step
/// cannot rename or drop a metric unnoticed.
#[test]
fn step_metric_names_are_pinned() {
    let stages = r#"
[[stages]]
name = "sft"
kind = "sft"
datasets = { sft = 1.0 }
steps = 1

[[stages]]
name = "plain"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 1

[[stages]]
name = "kl-loss"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 1
[stages.overrides]
kl_coef = 0.05
entropy_coef = 0.01

[[stages]]
name = "kl-reward-pad"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 1
[stages.overrides]
kl_coef = 0.05
pad = { enabled = true, ratio = 0.5, t_low = 0.01 }
extra = { "grpo.kl.placement" = "reward" }

[[stages]]
name = "dynamic"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 1
[stages.overrides]
kl_coef = 0.05
dynamic_sampling = true
extra = { "optim.updates_per_batch" = 2 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(dir.path(), stages, "")).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    let recs = steps(&summary.output_dir);
    assert_eq!(recs.len(), 5);
    let names = |stage: &str| -> Vec<&str> {
        let r = recs.iter().find(|r| r.stage == stage).unwrap();
        r.values.keys().map(String::as_str).collect()
    };
    let sorted = |keys: &[&[&'static str]]| -> Vec<&'static str> {
        let mut all: Vec<&str> = keys.concat();
        all.sort_unstable();
        all
    };
    let sft = [
        "grad_norm",
        "lr",
        "memory/optimizer_state_bytes",
        "samples/dropped",
        "sft/loss",
        "sft/skipped_long",
        "sft/tokens",
        "throughput/tokens_per_s",
        "time/step",
        "time/update",
    ];
    assert_eq!(names("sft"), sorted(&[&sft]));
    let grpo = [
        "accuracy",
        "clip_fraction",
        "entropy",
        "entropy_coef",
        "grad_norm",
        "loss",
        "lr",
        "memory/optimizer_state_bytes",
        "prompt_length/mean",
        "response/stopped_fraction",
        "response_length/mean",
        "reward",
        "reward/accuracy/mean",
        "reward/failures",
        "reward/mean",
        "reward/std",
        "samples/dropped",
        "samples/effective",
        "samples/generated",
        "samples/skipped_long_prompts",
        "samples/zero_advantage",
        "throughput/gen_tokens_per_s",
        "throughput/tokens_per_s",
        "time/backward",
        "time/forward",
        "time/logprobs",
        "time/optimizer",
        "time/reward",
        "time/rollout",
        "time/step",
        "time/update",
    ];
    assert_eq!(names("plain"), sorted(&[&grpo]));
    assert_eq!(names("kl-loss"), sorted(&[&grpo, &["kl"]]));
    assert_eq!(
        names("kl-reward-pad"),
        sorted(&[&grpo, &["kl", "pad/eligible", "pad/tau"]])
    );
    assert_eq!(
        names("dynamic"),
        sorted(&[&grpo, &["kl", "dynamic/groups", "dynamic/rounds"]])
    );
}

/// Mixed precision (`model.dtype = "bf16"`): the checkpoint holds the f32
/// master weights next to the moments, and a resumed run continues step for
/// step as the uninterrupted one does.
#[test]
fn bf16_run_resumes_with_its_master_weights() {
    let stages = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 3
"#;
    let extra = "[checkpoint]\nevery = 2\nkeep_last = 2\n";
    let exp_in = |dir: &Path| {
        let path = experiment(dir, stages, extra);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("threads = 1\n", "threads = 1\ndtype = \"bf16\"\n"),
        )
        .unwrap();
        Experiment::load(&path).unwrap()
    };
    let a = tempfile::tempdir().unwrap();
    let full = run(&exp_in(a.path()), &RunOptions::default()).unwrap();
    let b = tempfile::tempdir().unwrap();
    let exp_b = exp_in(b.path());
    let resumed = stop_and_resume(&exp_b, 2);
    assert_eq!(resumed.steps, 3);
    // The checkpoint the run stopped at (keep_last = 2 keeps it beside step 3).
    let ck = b
        .path()
        .join("run/checkpoints/step-00000002/optimizer.safetensors");
    let names: Vec<String> = tch::Tensor::read_safetensors(&ck)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".master")), "{names:?}");
    let (ra, rb) = (steps(&full.output_dir), steps(&resumed.output_dir));
    assert_eq!(ra.len(), 3);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(comparable(x), comparable(y), "step {} differs", x.step);
    }
}
