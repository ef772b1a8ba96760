//! The embedded quickstart at a smaller budget: the shipped
//! configs/quickstart.toml (tiny Qwen2.5-VL from random init, loader-synthetic,
//! reward-math, schedule-staged): first a text-only cold start then FRE,
//! then the quickstart's whole schedule on three seeds.
//! The cold
//! start must lift held-out accuracy on the synthetic text task from zero,
//! GRPO must train on it without undoing that, and the saved model must load
//! back.
//!
//! Accuracy is the mean over 4 completions sampled at temperature 1 per
//! held-out prompt (pass@1), 64 prompts never seen in training. Measured on
//! the development machine (one libtorch thread, deterministic) for seeds
//! 1 / 2 / 3: 0.309 / 0.148 / 0.121 after the cold start, 0.457 / 0.121 /
//! 0.145 after 40 GRPO steps. The GRPO effect on held-out text is within
//! the seed noise at this scale (docs/quickstart.md), so it is not what this
//! test asserts; GRPO's learning is tested where it is unambiguous
//! (host/tests/train.rs, a sparse rule reward 0.07 -> 0.52).

use std::path::{Path, PathBuf};

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::{run, RunOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The plugins configs/quickstart.toml loads.
fn require_plugins() {
    for p in ["loader-synthetic", "reward-math", "schedule-staged"] {
        let f = repo().join("target/plugins").join(format!("{p}.wasm"));
        assert!(
            f.is_file(),
            "{} is missing: run scripts/build-plugins.sh",
            f.display()
        );
    }
}

#[test]
fn sft_lifts_held_out_text_accuracy_and_grpo_trains_without_undoing_it() {
    require_plugins();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schedule.toml"),
        r#"
[[stages]]
name = "cold-start"
kind = "sft"
datasets = { text-traces = 1.0 }
steps = 300

[[stages]]
name = "fre"
kind = "grpo"
datasets = { text-rl = 1.0 }
steps = 40
[stages.overrides]
learning_rate = 5e-4
"#,
    )
    .unwrap();
    let exp_path = dir.path().join("exp.toml");
    std::fs::write(
        &exp_path,
        format!(
            r#"
extends = "{base}"
name = "quickstart-test"
output_dir = "run"
[schedule]
file = "schedule.toml"
[eval]
datasets = ["text-eval"]
limit = 64
greedy = false
samples = 4
pass_k = [1, 4]
[rollout]
max_response_tokens = 32
[optim]
lr = 3e-3
[sft]
batch_size = 32
[logging]
tensorboard = false
progress = false
"#,
            base = repo().join("configs/quickstart.toml").display()
        ),
    )
    .unwrap();
    let exp = Experiment::load(&exp_path).unwrap();
    let summary = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(summary.steps, 340);
    let acc = |when: &str| {
        summary
            .summary
            .iter()
            .find(|r| r.when == when && r.dataset == "text-eval")
            .unwrap_or_else(|| panic!("no evaluation {when:?}: {:?}", summary.summary))
            .accuracy
    };
    let (start, sft, rl) = (acc("start"), acc("after cold-start"), acc("after fre"));
    eprintln!("held-out text accuracy: start {start:.3}, after SFT {sft:.3}, after GRPO {rl:.3}");
    // Seeds 1-3: 0.12-0.31 after the cold start, from 0.
    assert!(
        sft >= start + 0.1,
        "the cold start did not lift held-out accuracy: {start:.3} -> {sft:.3}"
    );
    // Seeds 1-3 keep 82-148 % of it.
    assert!(
        rl >= 0.5 * sft,
        "GRPO undid the cold start: held-out accuracy {sft:.3} -> {rl:.3}"
    );
    // Every GRPO step updated the policy, on groups with a learning signal.
    let records =
        lmmhost::metrics::log::read_records(&summary.output_dir.join("metrics.jsonl")).unwrap();
    let grpo: Vec<_> = records.iter().filter(|r| r.kind == "grpo").collect();
    assert_eq!(grpo.len(), 40);
    for r in &grpo {
        let g = r.values["grad_norm"];
        assert!(g.is_finite() && g > 0.0, "step {}: grad_norm {g}", r.step);
    }
    let effective: f64 = grpo.iter().map(|r| r.values["samples/effective"]).sum();
    assert!(effective > 0.0);
    // The trained model loads back, with its processor files.
    let model =
        lmmhost_model::checkpoint::load(&summary.final_model, tch::Device::Cpu, tch::Kind::Float)
            .unwrap();
    assert!(model.source.unused.is_empty());
    lmmhost_model::processor::Processor::from_dir(&summary.final_model).unwrap();
    // The curves, the evaluations and the summary picture are drawn.
    let plots = summary.output_dir.join("plots");
    for f in ["summary.png", "eval_accuracy.png", "reward.png"] {
        assert!(plots.join(f).is_file(), "{f}");
    }
}

/// Steps per stage of the smaller budget (the shipped: 300, 40, 60).
const SMALL_BUDGET: [(&str, u64); 3] = [("cold-start", SFT_STEPS), ("fre", 10), ("mgt", 20)];

/// The shipped schedule (configs/schedules/quickstart.toml) with each
/// stage's steps cut to [`SMALL_BUDGET`]; everything else is the recipe's.
fn small_schedule() -> String {
    let path = repo().join("configs/schedules/quickstart.toml");
    let mut doc: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let stages = doc["stages"].as_array_mut().unwrap();
    let names: Vec<&str> = SMALL_BUDGET.iter().map(|(n, _)| *n).collect();
    let shipped: Vec<String> = stages
        .iter()
        .map(|st| st["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        shipped,
        names,
        "{}: the test cuts these stages",
        path.display()
    );
    for (stage, (_, steps)) in stages.iter_mut().zip(SMALL_BUDGET) {
        stage["steps"] = toml::Value::Integer(steps as i64);
    }
    toml::to_string(&doc).unwrap()
}

const SFT_STEPS: u64 = 150;
/// The gains every seed must show (see the measurements at the asserts).
const IMAGE_GAIN: f64 = 0.06;
const TOTAL_GAIN: f64 = 0.1;

/// Held-out greedy accuracy of `set` at each evaluation step of a run.
fn eval_accuracy(records: &[lmmhost::metrics::log::StepRecord], set: &str) -> Vec<(u64, f64)> {
    let key = format!("eval/{set}/accuracy");
    records
        .iter()
        .filter(|r| r.kind == "eval")
        .filter_map(|r| r.values.get(&key).map(|&v| (r.step, v)))
        .collect()
}

/// The quickstart's schedule (its cold-start mixture, FRE, MGT, its
/// reward) at a smaller budget, for seeds 1-3 in parallel
/// processes of one libtorch thread each, with the floating-point kernels
/// pinned as scripts/quickstart.sh pins them (a value already in the
/// environment wins, so the test also runs under other kernels).
#[test]
fn the_schedule_at_a_smaller_budget_gains_on_every_seed() {
    require_plugins();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schedule.toml"), small_schedule()).unwrap();
    let seeds = [1u64, 2, 3];
    let start = |seed: u64| {
        let exp = dir.path().join(format!("seed{seed}.toml"));
        std::fs::write(
            &exp,
            format!(
                r#"
extends = "{base}"
name = "quickstart-small-{seed}"
seed = {seed}
output_dir = "run{seed}"
[schedule]
file = "schedule.toml"
[rollout]
prompts_per_step = 8
[sft]
batch_size = 32
[eval]
limit = 50
[logging]
tensorboard = false
plots = false
progress = false
"#,
                base = repo().join("configs/quickstart.toml").display()
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"));
        cmd.arg("run").arg(&exp).current_dir(dir.path());
        for (k, v) in [("MKL_CBWR", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")] {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        let log = std::fs::File::create(dir.path().join(format!("seed{seed}.log"))).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        (seed, cmd.spawn().expect("starting lmmhost"))
    };
    // Two at a time: CI has two cores, and each run uses one thread.
    let mut failed = Vec::new();
    let mut running = std::collections::VecDeque::new();
    for &seed in &seeds {
        if running.len() == 2 {
            let (s, mut child): (u64, std::process::Child) = running.pop_front().unwrap();
            if !child.wait().unwrap().success() {
                failed.push(s);
            }
        }
        running.push_back(start(seed));
    }
    for (s, mut child) in running {
        if !child.wait().unwrap().success() {
            failed.push(s);
        }
    }
    let failed: Vec<String> = failed
        .iter()
        .map(|s| {
            let log = std::fs::read_to_string(dir.path().join(format!("seed{s}.log")));
            format!("seed {s}: {}", log.unwrap_or_default())
        })
        .collect();
    assert!(failed.is_empty(), "runs failed:\n{}", failed.join("\n"));
    let end = SFT_STEPS + 30;
    let mut lines = Vec::new();
    let mut gains = Vec::new();
    for seed in seeds {
        let run = dir.path().join(format!("run{seed}"));
        let records = lmmhost::metrics::log::read_records(&run.join("metrics.jsonl")).unwrap();
        let text = eval_accuracy(&records, "text-eval");
        let image = eval_accuracy(&records, "image-eval");
        let steps: Vec<u64> = text.iter().map(|&(s, _)| s).collect();
        assert_eq!(steps, [0, SFT_STEPS, SFT_STEPS + 10, end], "seed {seed}");
        lines.push(format!("seed {seed}: text {text:?}, image {image:?}"));
        let (t0, te) = (text[0].1, text[3].1);
        let (i0, ie) = (image[0].1, image[3].1);
        eprintln!("{}", lines.last().unwrap());
        gains.push((seed, t0, te, i0, ie));
    }
    // Measured (50 greedy held-out prompts per set, from 0.00 at the random
    // start), text / image at the end, seeds 1 / 2 / 3: avx2 kernels
    // (MKL_CBWR=AVX2) 0.04 / 0.28, 0.12 / 0.24, 0.14 / 0.22; ATen's default
    // kernels with MKL_CBWR=COMPATIBLE 0.06 / 0.26, 0.18 / 0.32, 0.08 / 0.12.
    // The thresholds are half the smallest gains seen (image 0.12, text +
    // image 0.20): learning outcomes move with the kernels, so the margin
    // is for another CPU's rounding, not a float tolerance.
    for (seed, t0, te, i0, ie) in gains {
        assert!(
            ie >= i0 + IMAGE_GAIN,
            "seed {seed}: held-out image accuracy {i0:.2} -> {ie:.2}, less than +{IMAGE_GAIN}\n{}",
            lines.join("\n")
        );
        assert!(
            te + ie >= t0 + i0 + TOTAL_GAIN,
            "seed {seed}: held-out text + image accuracy {:.2} -> {:.2}, less than +{TOTAL_GAIN}\n{}",
            t0 + i0,
            te + ie,
            lines.join("\n")
        );
    }
}

fn read_toml(path: &Path) -> toml::Table {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// docs/quickstart.md's recipe table says what the configs say: each stage of
/// configs/schedules/quickstart.toml has a row with its kind, its steps and
/// its learning rate, and the batch sizes are configs/quickstart.toml's.
#[test]
fn the_docs_recipe_table_matches_the_configs() {
    let exp = read_toml(&repo().join("configs/quickstart.toml"));
    let schedule = read_toml(&repo().join("configs/schedules/quickstart.toml"));
    let doc = std::fs::read_to_string(repo().join("docs/quickstart.md")).unwrap();
    let base_lr = exp["optim"]["lr"].as_float().expect("optim.lr");
    let sft_batch = exp["sft"]["batch_size"]
        .as_integer()
        .expect("sft.batch_size");
    let prompts = exp["rollout"]["prompts_per_step"]
        .as_integer()
        .expect("rollout.prompts_per_step");
    let group = exp["rollout"]["group_size"]
        .as_integer()
        .expect("rollout.group_size");
    let stages = schedule["stages"].as_array().expect("stages");
    assert!(!stages.is_empty());
    for st in stages {
        let name = st["name"].as_str().expect("stage name");
        let kind = st["kind"].as_str().expect("stage kind");
        let steps = st["steps"].as_integer().expect("stage steps");
        let lr = st
            .get("overrides")
            .and_then(|o| o.get("learning_rate"))
            .and_then(toml::Value::as_float)
            .unwrap_or(base_lr);
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("docs/quickstart.md: no recipe row for stage {name:?}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells.len() >= 6, "docs/quickstart.md: short row {row:?}");
        let what = |c: &str| format!("docs/quickstart.md, stage {name}: {c}");
        assert_eq!(cells[2].to_lowercase(), kind, "{}", what("kind"));
        assert_eq!(cells[4], steps.to_string(), "{}", what("steps"));
        let settings = cells[5];
        let lr_text = format!("lr {lr:e}");
        assert!(
            settings.contains(&lr_text),
            "{}",
            what(&format!("{settings:?} lacks {lr_text:?}"))
        );
        let batch = match kind {
            "sft" => format!("batch {sft_batch}"),
            _ => format!("{prompts} prompts x {group}"),
        };
        assert!(
            settings.contains(&batch),
            "{}",
            what(&format!("{settings:?} lacks {batch:?}"))
        );
    }
}
