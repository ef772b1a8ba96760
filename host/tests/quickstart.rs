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
//! held-out prompt (pass@1), 64 prompts never seen in training (3-term
//! chains, half of whose cold-start traces stop one step early, so a sampled
//! answer is right only when the model finishes the chain). Measured on the
//! development machine (one libtorch thread, deterministic, seed 1,
//! 2026-12-06): 0.105 after the cold start, 0.117 after 40 GRPO steps. The
//! GRPO effect on held-out text is within the seed noise at this budget, so
//! it is not what this test asserts; GRPO's learning is tested where it is
//! unambiguous (host/tests/train.rs, a sparse rule reward 0.07 -> 0.52, and
//! the whole schedule below).

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
    // 0.105 after the cold start, from 0 (half of it asserted).
    assert!(
        sft >= start + 0.05,
        "the cold start did not lift held-out accuracy: {start:.3} -> {sft:.3}"
    );
    // Kept 111 % of it.
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

/// Steps per stage of the smaller budget (the shipped: 500, 60, 80).
const SMALL_BUDGET: [(&str, u64); 3] = [
    ("cold-start", SFT_STEPS),
    ("fre", FRE_STEPS),
    ("mgt", MGT_STEPS),
];

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

const SFT_STEPS: u64 = 400;
const FRE_STEPS: u64 = 20;
const MGT_STEPS: u64 = 30;
/// The gains every seed must show (see the measurements at the asserts).
const IMAGE_GAIN: f64 = 0.25;
const TEXT_DROP: f64 = 0.1;

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
    let end = SFT_STEPS + FRE_STEPS + MGT_STEPS;
    let mut lines = Vec::new();
    let mut outcomes = Vec::new();
    for seed in seeds {
        let run = dir.path().join(format!("run{seed}"));
        let records = lmmhost::metrics::log::read_records(&run.join("metrics.jsonl")).unwrap();
        let text = eval_accuracy(&records, "text-eval");
        let image = eval_accuracy(&records, "image-eval");
        let steps: Vec<u64> = text.iter().map(|&(s, _)| s).collect();
        assert_eq!(
            steps,
            [0, SFT_STEPS, SFT_STEPS + FRE_STEPS, end],
            "seed {seed}"
        );
        lines.push(format!("seed {seed}: text {text:?}, image {image:?}"));
        eprintln!("{}", lines.last().unwrap());
        outcomes.push(Outcome {
            seed,
            text: (text[1].1, text[3].1),
            image: (image[1].1, image[3].1),
        });
    }
    // Measured 2026-12-06 (50 greedy held-out prompts per set), after the
    // cold start -> at the end, seeds 1 / 2 / 3. Pinned kernels (avx2,
    // MKL_CBWR=AVX2): image 0.00 -> 0.62, 0.00 -> 0.96, 0.24 -> 0.74; text
    // 0.78 -> 0.80, 0.32 -> 0.76, 0.86 -> 0.94. ATen's default kernels with
    // MKL_CBWR=COMPATIBLE: image 0.06 -> 0.90, 0.06 -> 0.86, 0.00 -> 0.70;
    // text 0.60 -> 0.78, 0.16 -> 0.66, 0.76 -> 0.78. The image threshold is
    // half the smallest gain seen (+0.50), the text one allows a loss where
    // the smallest change seen is +0.02: learning outcomes move with the
    // kernels, so the margin is for another CPU's rounding, not a float
    // tolerance.
    let all = lines.join("\n");
    for o in outcomes {
        let seed = o.seed;
        let ((i0, ie), (t0, te)) = (o.image, o.text);
        assert!(
            ie >= i0 + IMAGE_GAIN,
            "seed {seed}: held-out image accuracy {i0:.2} -> {ie:.2}, less than +{IMAGE_GAIN}\n{all}"
        );
        assert!(
            te >= t0 - TEXT_DROP,
            "seed {seed}: held-out text accuracy {t0:.2} -> {te:.2}, down more than {TEXT_DROP}\n{all}"
        );
    }
}

/// One seed's held-out accuracy after the cold start and at the end.
struct Outcome {
    seed: u64,
    text: (f64, f64),
    image: (f64, f64),
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
