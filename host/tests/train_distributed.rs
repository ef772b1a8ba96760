//! Data-parallel training end to end on CPU (Gloo): the `lmmhost` binary on
//! 2 ranks, started by `--nproc` or, as torchrun starts them, with the launch
//! variables set, against the same binary on 1 rank. The tiny char-qwen2
//! trains on one thread per rank.

mod train_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lmmhost::metrics::log::{read_records, StepRecord};
use lmmhost::train::experiment::Experiment;
use lmmhost::train::memory_plan::PlanInputs;
use lmmhost::train::policy::Policy;
use lmmhost_model::config::ModelConfig;
use tch::Tensor;
use train_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_lmmhost");

/// `lmmhost run exp --set output_dir="<out>" <SMALL> <extra>`; panics with
/// its output unless it succeeds.
fn run_cli(exp: &Path, out: &Path, extra: &[&str]) -> Output {
    let output = Command::new(BIN)
        .arg("run")
        .arg(exp)
        .arg("--set")
        .arg(format!("output_dir=\"{}\"", out.display()))
        .args(SMALL)
        .args(extra)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lmmhost run {extra:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn weights(model_dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(model_dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// ||b - a|| / ||a - start||: how far two runs' weights are apart, relative
/// to how far training moved them.
fn relative_difference(start: &Path, a: &Path, b: &Path) -> f64 {
    let (w0, wa, wb) = (weights(start), weights(a), weights(b));
    let (mut diff, mut moved) = (0.0, 0.0);
    for ((n0, t0), ((na, ta), (nb, tb))) in w0.iter().zip(wa.iter().zip(&wb)) {
        assert!(n0 == na && na == nb, "{n0} {na} {nb}");
        diff += (tb - ta).square().sum(tch::Kind::Double).double_value(&[]);
        moved += (ta - t0).square().sum(tch::Kind::Double).double_value(&[]);
    }
    assert!(moved > 0.0, "training did not change the weights");
    (diff / moved).sqrt()
}

/// The weights the run starts from (random init with the run's seed).
fn initial_model(exp: &Path, dir: &Path) -> PathBuf {
    let exp = Experiment::load(exp).unwrap();
    let policy = Policy::load(&exp.model, None, exp.seed).unwrap();
    let out = dir.join("initial-model");
    policy.save(&out).unwrap();
    out
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    // TensorBoard's event file is named by its start time and host.
    out.into_iter()
        .map(|f| {
            if f.starts_with("tensorboard/") {
                "tensorboard/events".into()
            } else {
                f
            }
        })
        .collect()
}

/// Metrics `keys` of step records `a` (1 rank) and `b` (2 ranks) agree to
/// `tol`, relative to the value (or absolute below 1).
fn assert_close(a: &StepRecord, b: &StepRecord, keys: &[&str], tol: f64) {
    let mut worst = 0.0f64;
    for k in keys {
        let (x, y) = (a.values[*k], b.values[*k]);
        let d = (x - y).abs() / x.abs().max(1.0);
        worst = worst.max(d);
        assert!(d <= tol, "step {} {k}: {x} on 1 rank, {y} on 2", a.step);
    }
    eprintln!("step {}: metrics within {worst:.1e} of one rank's", a.step);
}

const GRPO_2: &str = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
"#;

const SFT_2: &str = r#"
[[stages]]
name = "cold-start"
kind = "sft"
datasets = { sft = 1.0 }
steps = 2
"#;

/// Small groups on few prompts: the step is seconds; 4 prompts split 2 + 2.
const SMALL: [&str; 4] = [
    "--set",
    "rollout.group_size=4",
    "--set",
    "rollout.prompts_per_step=4",
];

/// What the update of a GRPO step logs, compared between 1 rank and 2.
const GRPO_METRICS: [&str; 5] = [
    "reward/mean",
    "reward/std",
    "response_length/mean",
    "loss",
    "grad_norm",
];

/// Bound on ||w(2 ranks) - w(1 rank)|| / ||w(1 rank) - w(start)|| after two
/// steps: the gradients are summed in another order, so they differ in the
/// last bits. Measured here (AMD EPYC; also with ATEN_CPU_CAPABILITY=default
/// or avx2 and MKL_CBWR=COMPATIBLE): 3.9e-6 to 6.5e-6 for GRPO (with bad
/// samples, dynamic sampling, whitening, evaluation, two torchrun nodes
/// alike), 1.0e-6 to 1.3e-5 for SFT (batches of 5 and 6), 1.3e-5 to 2.0e-5
/// for PAD (4 rows drawn); the bound leaves 25x for other CPUs' kernels. A
/// loss divided by one rank's token count instead of the global one moved
/// the GRPO weights by 1.9e-1 here, a rank's own PAD draw by 7.7e-1. Adam's steps hardly depend on
/// the gradients' scale, so a gradient averaged instead of summed (3.6e-3
/// for GRPO, nothing for SFT) is caught by the logged loss and gradient norm
/// (1 rank vs 2 within 2.4e-7, asserted to 1e-4).
const SAME_STEP: f64 = 5e-4;

/// Runs the experiment of `stages` on 1 rank and on 2 (`--nproc 2`): the
/// run directories and the 2-rank launcher's output, once the weights were
/// found within [`SAME_STEP`], one record logged per step and the same
/// files written (by rank 0 alone).
fn one_rank_and_two(
    what: &str,
    dir: &Path,
    stages: &str,
    extra: &str,
) -> (PathBuf, PathBuf, Output) {
    one_rank_and_two_of(what, dir, &experiment(dir, stages, extra), &[])
}

/// [`one_rank_and_two`] of the experiment file `exp`, both runs with `args`.
fn one_rank_and_two_of(
    what: &str,
    dir: &Path,
    exp: &Path,
    args: &[&str],
) -> (PathBuf, PathBuf, Output) {
    let exp = exp.to_path_buf();
    let start = initial_model(&exp, dir);
    let one = dir.join("one");
    let two = dir.join("two");
    run_cli(&exp, &one, args);
    let out = run_cli(&exp, &two, &[args, &["--nproc", "2"]].concat());
    let d = relative_difference(&start, &one.join("final-model"), &two.join("final-model"));
    eprintln!("{what}: 2 ranks vs 1, relative difference of the weights {d:.3e}");
    assert!(d < SAME_STEP, "2 ranks took another step than 1: {d:.3e}");
    assert_eq!(steps(&two).len(), 2, "one record per step");
    // Rank 1 logs the bad samples of its share to a file of its own.
    let written = |dir: &Path| -> Vec<String> {
        let mut f = files(dir);
        f.retain(|f| !f.starts_with("failures"));
        f
    };
    assert_eq!(written(&one), written(&two));
    (one, two, out)
}

/// `dist/bytes` of each 2-rank step: the f32 gradient of every weight
/// (one optimizer update per step), plus a few hundred bytes of counts,
/// metrics and flags (one per tensor) summed on the way.
fn gradient_payload(dir: &Path, steps: &[StepRecord], what: &str) {
    payload_per_weight(dir, steps, what, 4);
}

/// As [`gradient_payload`], for `per_weight` bytes of collectives' payload
/// per weight and step.
fn payload_per_weight(dir: &Path, steps: &[StepRecord], what: &str, per_weight: u8) {
    let numel: i64 = weights(&dir.join("initial-model"))
        .iter()
        .map(|(_, t)| t.numel() as i64)
        .sum();
    let payload = f64::from(per_weight) * numel as f64;
    for s in steps {
        let bytes = s.values["dist/bytes"];
        eprintln!(
            "{what} step {}: dist/bytes {bytes} ({numel} weights: {payload} bytes of payload)",
            s.step
        );
        assert!(
            bytes >= payload && bytes < payload + 4096.0,
            "{what} step {}: {bytes} bytes for {payload} of payload",
            s.step
        );
    }
}

/// The lines of the run's failure logs (rank 0's and the other ranks').
fn failure_lines(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = files(dir)
        .iter()
        .filter(|f| f.starts_with("failures"))
        .flat_map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            text.lines().map(String::from).collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

/// The experiment's digits as `rows` rows, those whose index `bad` picks cut
/// short, under the loader's `on_error = "zero"` and parsed at `get`.
fn with_bad_rows(exp: &Path, rows: usize, bad: impl Fn(usize) -> bool) {
    let dir = exp.parent().unwrap();
    let mut text = String::new();
    for i in 0..rows {
        if bad(i) {
            text.push_str("{\"problem\": \"Say a digit.\", \"answer\": \n");
        } else {
            text.push_str(&format!(
                "{{\"problem\": \"Say a digit ({i}).\", \"answer\": \"7\"}}\n"
            ));
        }
    }
    std::fs::write(dir.join("digits.jsonl"), text).unwrap();
    let exp_text = std::fs::read_to_string(exp).unwrap();
    if !exp_text.contains("on_error") {
        let lenient = exp_text.replace(
            "[plugins.jsonl]\n",
            "[plugins.jsonl]\non_error = \"zero\"\nconfig = { validate_at_open = false }\n",
        );
        std::fs::write(exp, lenient).unwrap();
    }
}

#[test]
fn grpo_on_two_ranks_takes_the_single_rank_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, out) = one_rank_and_two("GRPO", dir.path(), GRPO_2, "");
    // The metrics are those of the whole step, logged once.
    let (a, b) = (steps(&one), steps(&two));
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(b.values["samples/generated"], 16.0);
        assert_close(a, b, &GRPO_METRICS, 1e-4);
    }
    gradient_payload(dir.path(), &b, "GRPO");
    // Only rank 0 printed the summary line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("2 steps; model saved to").count(),
        1,
        "{stdout}"
    );
}

/// `distributed.group_of_one` on one rank (the check scripts/gpu-check.sh
/// makes of NCCL on one GPU): every collective of the step runs, moving the
/// gradient, and the run takes the plain run's steps. Without a launcher
/// there is no group to build, which is said, not ignored.
#[test]
fn a_group_of_one_runs_the_collectives_and_takes_the_plain_steps() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), GRPO_2, "");
    let start = initial_model(&exp, dir.path());
    let (plain, grouped) = (dir.path().join("plain"), dir.path().join("grouped"));
    run_cli(&exp, &plain, &[]);
    let group = ["--set", "distributed.group_of_one=true"];
    run_cli(&exp, &grouped, &[&group[..], &["--nproc", "1"]].concat());
    let d = relative_difference(
        &start,
        &plain.join("final-model"),
        &grouped.join("final-model"),
    );
    eprintln!("group of one vs none: relative difference of the weights {d:.3e}");
    assert!(d < SAME_STEP, "a group of one took another step: {d:.3e}");
    let (a, b) = (steps(&plain), steps(&grouped));
    assert_eq!(b.len(), 2);
    for (a, b) in a.iter().zip(&b) {
        assert_close(a, b, &GRPO_METRICS, 1e-4);
        assert!(!a.values.contains_key("dist/bytes"), "no group, no bytes");
    }
    gradient_payload(dir.path(), &b, "group of one");
    let out = Command::new(BIN)
        .arg("run")
        .arg(&exp)
        .args(group)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--nproc 1"),
        "{stderr}"
    );
}

#[test]
fn sft_on_two_ranks_takes_the_single_rank_steps() {
    let dir = tempfile::tempdir().unwrap();
    // 5 conversations: 2 on rank 0, 3 on rank 1, with other token counts.
    let (one, two, _) = one_rank_and_two("SFT", dir.path(), SFT_2, "[sft]\nbatch_size = 5\n");
    for (a, b) in steps(&one).iter().zip(&steps(&two)) {
        assert_eq!(a.values["sft/tokens"], b.values["sft/tokens"]);
        assert_close(a, b, &["sft/loss", "grad_norm"], 1e-4);
    }
    gradient_payload(dir.path(), &steps(&two), "SFT");
}

#[test]
fn a_run_checkpointed_on_two_ranks_resumes_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), GRPO_2, "");
    let start = initial_model(&exp, dir.path());
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    run_cli(&exp, &straight, &[]);
    run_cli(&exp, &resumed, &["--nproc", "2", "--max-steps", "1"]);
    assert!(resumed.join("checkpoints/step-00000001").is_dir());
    run_cli(&exp, &resumed, &["--resume"]);
    let d = relative_difference(
        &start,
        &straight.join("final-model"),
        &resumed.join("final-model"),
    );
    eprintln!("step 1 on 2 ranks, step 2 resumed on 1, vs both on 1: {d:.3e}");
    assert!(d < SAME_STEP, "the resumed run went another way: {d:.3e}");
    // Data cursors and random streams are the run's, not a rank's: step 2
    // drew and generated what the uninterrupted run did.
    let (a, b) = (steps(&straight), steps(&resumed));
    assert_eq!(b.len(), 2);
    assert_close(&a[1], &b[1], &["reward/mean", "response_length/mean"], 1e-9);
}

/// Each rank loads only its share: a bad sample is logged once, by the rank
/// that loaded it, and counted once in `samples/dropped`; the prompts left
/// generate what they generate on one rank (their random streams are keyed by
/// their place in the step's draw, not by the rank or the samples left out).
#[test]
fn bad_samples_are_loaded_logged_and_counted_once_across_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), GRPO_2, "");
    // 1 in 3 rows bad: some steps lose a prompt on one rank.
    with_bad_rows(&exp, 12, |i| i % 3 == 1);
    let (one, two, _) = one_rank_and_two_of("GRPO, bad samples", dir.path(), &exp, &[]);
    let (a, b) = (steps(&one), steps(&two));
    let dropped: f64 = a.iter().map(|r| r.values["samples/dropped"]).sum();
    assert!(dropped > 0.0, "no bad sample was drawn");
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.values["samples/dropped"], b.values["samples/dropped"]);
        assert_eq!(a.values["samples/generated"], b.values["samples/generated"]);
        assert_close(
            a,
            b,
            &["reward/mean", "response_length/mean", "loss", "grad_norm"],
            1e-4,
        );
    }
    let (logged_one, logged_two) = (failure_lines(&one), failure_lines(&two));
    assert_eq!(logged_one.len() as f64, dropped);
    assert_eq!(logged_one, logged_two);
}

/// A rank whose share of a step is empty (its one prompt left out as bad)
/// takes part in the step's collectives with nothing to train on: the run
/// goes on (a rank left waiting would fail at the timeout) and takes the
/// single-rank steps. When every rank's share is empty, every rank stops at
/// once with the reason.
#[test]
fn a_rank_with_an_empty_share_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // 2 prompts a step, one bad: each step draws both rows, so one rank's
    // share is empty every step. The entropy bonus moves the weights even if
    // the good prompt's completions all score the same.
    let extra = "[grpo.entropy]\ncoef = 0.01\n\n[distributed]\ntimeout_secs = 60\n";
    let exp = experiment(dir.path(), GRPO_2, extra);
    with_bad_rows(&exp, 2, |i| i == 0);
    let two_prompts = ["--set", "rollout.prompts_per_step=2"];
    let (one, two, _) = one_rank_and_two_of("empty share", dir.path(), &exp, &two_prompts);
    for (a, b) in steps(&one).iter().zip(&steps(&two)) {
        assert_eq!(b.values["samples/dropped"], 1.0);
        assert_eq!(a.values["samples/generated"], b.values["samples/generated"]);
        assert_close(a, b, &["loss", "grad_norm", "entropy"], 1e-4);
    }
    assert_eq!(failure_lines(&one), failure_lines(&two));
    // Under ZeRO stage 2 the rank without rows takes part in the other's
    // reduce-scatters with zeros, in micro-batches of one row.
    let zero2 = dir.path().join("zero2");
    let sets = [
        "--nproc",
        "2",
        "--set",
        "distributed.zero_stage=2",
        "--set",
        "optim.micro_batch_size=1",
    ];
    run_cli(&exp, &zero2, &[&two_prompts[..], &sets].concat());
    let start = dir.path().join("initial-model");
    let d = relative_difference(&start, &two.join("final-model"), &zero2.join("final-model"));
    eprintln!("empty share, ZeRO stage 2 vs 0: relative difference {d:.3e}");
    assert!(d < SAME_STEP, "{d:.3e}");

    // Two optimizer updates a step: the rank with rows takes both, and the
    // one with none takes part in both (the weights and the last update's
    // gradient norm are the single rank's; one update on every rank left
    // them apart).
    let sub = dir.path().join("two-updates");
    std::fs::create_dir_all(&sub).unwrap();
    let updates = [&two_prompts[..], &["--set", "optim.updates_per_batch=2"]].concat();
    let (one, two, _) = one_rank_and_two_of("empty share, 2 updates", &sub, &exp, &updates);
    for (a, b) in steps(&one).iter().zip(&steps(&two)) {
        assert_close(a, b, &["loss", "grad_norm", "entropy"], 1e-4);
    }

    // Both rows bad: no rank has a prompt; both stop at step 1 with the reason.
    with_bad_rows(&exp, 2, |_| true);
    let out = Command::new(BIN)
        .arg("run")
        .arg(&exp)
        .args(["--set", "output_dir=\"none\""])
        .current_dir(dir.path())
        .args(two_prompts)
        .args(["--nproc", "2"])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("step 1: every sample drawn was left out as bad (2 under on_error = \"zero\""),
        "{err}"
    );
}

/// Dynamic sampling across ranks: the groups kept are counted over all
/// ranks and every rank runs the same extra rounds, taking the groups one
/// process would take (the first informative ones in draw order).
#[test]
fn dynamic_sampling_on_two_ranks_takes_the_single_rank_steps() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[grpo.dynamic_sampling]\nenabled = true\nmax_retries = 6\n";
    let (one, two, _) = one_rank_and_two("dynamic sampling", dir.path(), GRPO_2, extra);
    let (a, b) = (steps(&one), steps(&two));
    let rounds: Vec<f64> = a.iter().map(|r| r.values["dynamic/rounds"]).collect();
    eprintln!("rounds per step: {rounds:?}");
    assert!(
        rounds.iter().any(|&r| r > 1.0),
        "no extra round: {rounds:?}"
    );
    for (a, b) in a.iter().zip(&b) {
        for k in [
            "dynamic/rounds",
            "dynamic/groups",
            "samples/generated",
            "samples/effective",
        ] {
            assert_eq!(a.values[k], b.values[k], "step {} {k}", a.step);
        }
        assert_close(a, b, &GRPO_METRICS, 1e-4);
    }
}

/// Whitening standardises with the whole batch's mean and variance, not a
/// rank's share's (which moved the weights by 1.3e-1 relative here).
#[test]
fn whitened_advantages_on_two_ranks_take_the_single_rank_steps() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[grpo]\nwhiten_advantages = true\n";
    let (one, two, _) = one_rank_and_two("whitening", dir.path(), GRPO_2, extra);
    for (a, b) in steps(&one).iter().zip(&steps(&two)) {
        assert_close(a, b, &["loss", "grad_norm", "entropy"], 1e-4);
    }
}

/// PAD across ranks: every rank draws from the advantages of the whole
/// batch, in one process's order, and trains on the rows of its share.
#[test]
fn pad_on_two_ranks_takes_the_single_rank_steps() {
    let dir = tempfile::tempdir().unwrap();
    // A quarter of the 16 rows: fewer than are eligible, so the draw decides.
    let extra = "[grpo.pad]\nenabled = true\nratio = 0.25\ntau_decay_steps = 2\n";
    let (one, two, _) = one_rank_and_two("PAD", dir.path(), GRPO_2, extra);
    let (a, b) = (steps(&one), steps(&two));
    let eligible: Vec<f64> = a.iter().map(|r| r.values["pad/eligible"]).collect();
    let effective: Vec<f64> = a.iter().map(|r| r.values["samples/effective"]).collect();
    eprintln!("PAD: eligible {eligible:?}, trained on {effective:?} of 16 rows");
    // The draw chose among the eligible rows.
    assert!(
        (eligible.iter().zip(&effective)).any(|(&el, &ef)| ef > 0.0 && ef < el),
        "{eligible:?} {effective:?}"
    );
    for (a, b) in a.iter().zip(&b) {
        for k in ["pad/eligible", "samples/effective"] {
            assert_eq!(a.values[k], b.values[k], "step {} {k}", a.step);
        }
        // A step whose rows all have zero advantage trains on none.
        assert_eq!(a.values.contains_key("loss"), b.values.contains_key("loss"));
        if a.values.contains_key("loss") {
            assert_close(a, b, &["loss", "grad_norm", "entropy", "pad/tau"], 1e-4);
        }
    }
}

/// Evaluation split across ranks: each rank evaluates its share of the
/// prompts (a prompt's completions keyed by its index in the dataset), the
/// answers are gathered, and rank 0 logs and writes what one process does.
#[test]
fn evaluation_on_two_ranks_equals_the_single_rank_one() {
    let dir = tempfile::tempdir().unwrap();
    // 7 prompts, 3 completions each, sampled: shares of 3 and 4.
    let extra = "[eval]\ndatasets = [\"digits\"]\nevery = 1\nlimit = 7\ngreedy = false\nsamples = 3\npass_k = [1, 3]\n";
    let (one, two, out) = one_rank_and_two("evaluation", dir.path(), GRPO_2, extra);
    let evals = |dir: &Path| -> Vec<StepRecord> {
        read_records(&dir.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "eval")
            .collect()
    };
    let (a, b) = (evals(&one), evals(&two));
    // At the start, after steps 1 and 2, and at the end of the stage.
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), a.len());
    for (a, b) in a.iter().zip(&b) {
        let keys: Vec<&str> = a
            .values
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with("time/"))
            .collect();
        assert_eq!(keys.len(), 5, "{keys:?}");
        assert_close(a, b, &keys, 1e-9);
    }
    // The same answers, in the same order, in rank 0's files.
    for f in files(&one).iter().filter(|f| f.starts_with("eval/")) {
        let text = |d: &Path| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(text(&one), text(&two), "{f}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("over 7 prompts (3 + 4 on 2 ranks)"),
        "{stderr}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two nodes of one rank each, started as torchrun starts them on a cluster
/// (`--nnodes 2 --node-rank N` and a c10d rendezvous at an endpoint; here
/// both nodes are this machine): the run takes the single-rank steps.
#[test]
fn two_nodes_started_by_torchrun_take_the_single_rank_steps() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), GRPO_2, "");
    let start = initial_model(&exp, dir.path());
    let one = dir.path().join("one");
    run_cli(&exp, &one, &[]);
    let nodes = dir.path().join("nodes");
    let endpoint = format!("127.0.0.1:{}", free_port());
    let node = |n: usize| {
        let log = dir.path().join(format!("node{n}.log"));
        let child = Command::new(repo().join(".venv/bin/python"))
            .args([
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
            ])
            .arg(n.to_string())
            .args([
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-id",
                "t",
            ])
            .args(["--rdzv-endpoint", &endpoint, "--no-python", BIN, "run"])
            .arg(&exp)
            .arg("--set")
            .arg(format!("output_dir=\"{}\"", nodes.display()))
            .args(SMALL)
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    };
    let started = [node(0), node(1)];
    for (mut child, log) in started {
        let status = child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "{}:\n{text}", log.display());
    }
    let d = relative_difference(&start, &one.join("final-model"), &nodes.join("final-model"));
    eprintln!("2 nodes by torchrun vs 1 rank: relative difference of the weights {d:.3e}");
    assert!(
        d < SAME_STEP,
        "2 nodes took another step than 1 rank: {d:.3e}"
    );
    assert_eq!(steps(&nodes).len(), 2, "one record per step");
}

/// A rank as torchrun starts it: the launch variables, its own log file.
fn start_rank(exp: &Path, out: &Path, rank: usize, port: u16, log: &Path) -> std::process::Child {
    Command::new(BIN)
        .arg("run")
        .arg(exp)
        .arg("--set")
        .arg(format!("output_dir=\"{}\"", out.display()))
        .args(SMALL)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_rank_stops_the_other_within_the_timeout_and_leaves_no_partial_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let stages = GRPO_2.replace("steps = 2", "steps = 500");
    let timeout = 5.0;
    // Under ZeRO 2 every rank writes its optimizer shards into each checkpoint.
    let extra = format!(
        "[checkpoint]\nevery = 1\n\n[distributed]\ntimeout_secs = {timeout}\nzero_stage = 2\n"
    );
    let exp = experiment(dir.path(), &stages, &extra);
    let out = dir.path().join("run");
    let port = free_port();
    let log0 = dir.path().join("rank0.log");
    let mut rank0 = start_rank(&exp, &out, 0, port, &log0);
    let mut rank1 = start_rank(&exp, &out, 1, port, &dir.path().join("rank1.log"));
    // Mid-run: once rank 0 has logged two steps.
    let t0 = Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |s| s.lines().count()) < 2 {
        let ended = rank0.try_wait().unwrap().is_some() || rank1.try_wait().unwrap().is_some();
        assert!(
            !ended && t0.elapsed() < Duration::from_secs(120),
            "no steps: {}",
            std::fs::read_to_string(&log0).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rank1.kill().unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = rank0.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > Duration::from_secs_f64(timeout + 30.0) {
            let _ = rank0.kill();
            panic!("rank 0 still runs {timeout} s + 30 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = rank1.wait();
    let stopped = killed.elapsed().as_secs_f64();
    let err = std::fs::read_to_string(&log0).unwrap();
    eprintln!("rank 0 stopped {stopped:.2} s after rank 1 was killed:\n{err}");
    assert!(!status.success());
    assert!(
        stopped < timeout + 5.0,
        "rank 0 took {stopped:.1} s to stop"
    );
    assert!(err.contains("error: rank 0 of 2: "), "{err}");
    // Every checkpoint in place is whole; none was left half-written, and the
    // run did not end as if it had finished.
    let mut complete = 0;
    for e in std::fs::read_dir(out.join("checkpoints")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(name == "latest" || name.starts_with("step-"), "{name}");
        if name.starts_with("step-") {
            let shards = files(&e.path().join("optimizer"));
            assert_eq!(
                shards,
                [
                    "layout.json",
                    "rank-00000-of-00002.safetensors",
                    "rank-00001-of-00002.safetensors"
                ],
                "{name}"
            );
            complete += 1;
        }
    }
    assert!(complete >= 1, "no checkpoint was written before the kill");
    assert!(!out.join("final-model").exists());
}

/// `--set` lines of the ZeRO tests: weight decay on, and a clip bound the
/// tiny model's gradient norms (0.7 to 0.9 here) exceed wherever there is
/// a gradient (GRPO's first step has none: every group's rewards tie).
const ZERO_SETTINGS: [&str; 4] = [
    "--set",
    "optim.weight_decay=0.1",
    "--set",
    "optim.grad_clip=0.05",
];

/// ||w(ZeRO stage 1 or 2) - w(stage 0)|| / ||w(stage 0) - w(start)||, all
/// on 2 ranks, is bounded by [`SAME_STEP`]: the gradients are the same,
/// reduce-scattered instead of all-reduced (stage 2), and the global norm
/// is summed from the shards' squares, so at most the summation order
/// differs. Measured here: 0 (bit-identical weights) for GRPO (3 steps) and
/// SFT in bf16, also with ATEN_CPU_CAPABILITY=default or avx2 and
/// MKL_CBWR=COMPATIBLE. Clipping each rank's shards by their own norm
/// instead of the global one gave 1.2e-2 (GRPO) and 2.9e-2 (SFT).
///
/// Runs `exp` on 2 ranks under ZeRO stages 0, 1 and 2 (with `sets` on the
/// command line); the run directories, once the weights of stages 1 and 2
/// were found within [`SAME_STEP`] of stage 0's, the logged gradient norms
/// equal and above the clip bound at two steps or more (clipping engaged),
/// and the optimizer state of the rank holding most half of stage 0's.
fn each_zero_stage(what: &str, dir: &Path, exp: &Path, sets: &[&str]) {
    let start = initial_model(exp, dir);
    let runs: Vec<PathBuf> = (0..3)
        .map(|stage| {
            let out = dir.join(format!("zero{stage}"));
            let zero = format!("distributed.zero_stage={stage}");
            let mut extra = vec!["--nproc", "2", "--set", &zero];
            extra.extend(ZERO_SETTINGS);
            extra.extend(sets);
            run_cli(exp, &out, &extra);
            out
        })
        .collect();
    let plain = steps(&runs[0]);
    let clipped = plain
        .iter()
        .filter(|r| r.values["grad_norm"] > 0.05)
        .count();
    assert!(clipped >= 2, "clipping engaged at {clipped} steps only");
    let whole = plain[0].values["memory/optimizer_state_bytes"];
    for (stage, run) in runs.iter().enumerate().skip(1) {
        let model = if sets.iter().any(|s| s.starts_with("model.lora")) {
            "final-model-merged"
        } else {
            "final-model"
        };
        let d = relative_difference(&start, &runs[0].join(model), &run.join(model));
        eprintln!("{what}: ZeRO stage {stage} vs 0 on 2 ranks, relative difference {d:.3e}");
        assert!(
            d < SAME_STEP,
            "ZeRO stage {stage} took another step: {d:.3e}"
        );
        let sharded = steps(run);
        assert_eq!(sharded.len(), plain.len());
        // `lmmhost plan --nproc 2` predicts the state a rank holds.
        let mut keys: Vec<String> = extra_sets(sets);
        keys.push(format!("distributed.zero_stage={stage}"));
        let settings = Experiment::load_settings(exp, &keys).unwrap();
        let config = ModelConfig::from_dir(&settings.model.path).unwrap();
        let plan = PlanInputs::from_experiment(&settings, &config, 2)
            .unwrap()
            .plan();
        let planned = (plan.master_weights + plan.optimizer) as f64;
        let held = sharded[0].values["memory/optimizer_state_bytes"];
        eprintln!(
            "{what}: stage {stage} holds {held} bytes of optimizer state, the plan says {planned}"
        );
        assert!(
            (planned / held - 1.0).abs() < 1e-3,
            "planned {planned}, held {held}"
        );
        for (a, b) in plain.iter().zip(&sharded) {
            assert_close(a, b, &["grad_norm"], 1e-4);
            // Stage 2 sums each rank's shards of the gradients only.
            let sum = b.values["memory/grad_sum_bytes"] / a.values["memory/grad_sum_bytes"];
            eprintln!("{what}: stage {stage} holds {sum:.4} of stage 0's gradient sum");
            if stage == 1 {
                assert_eq!(sum, 1.0);
            } else {
                assert!((0.5..0.51).contains(&sum), "{sum}");
            }
            // Each rank holds its half of every bucket (the last one's
            // padding aside).
            let half = b.values["memory/optimizer_state_bytes"] / whole;
            eprintln!("{what}: stage {stage} holds {half:.4} of stage 0's optimizer state");
            assert!((0.5..0.51).contains(&half), "{half}");
        }
    }
}

/// The `KEY=VALUE` of each `--set` in `args`.
fn extra_sets(args: &[&str]) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].to_string())
        .collect()
}

#[test]
fn zero_stages_take_the_unsharded_grpo_steps() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), &GRPO_2.replace("steps = 2", "steps = 3"), "");
    each_zero_stage("GRPO", dir.path(), &exp, &[]);
    // Only the adapters train and are sharded; their merge is compared.
    let lora = ["--set", "model.lora={rank=4, alpha=8, merge_on_save=true}"];
    each_zero_stage("GRPO, LoRA", &dir.path().join("lora"), &exp, &lora);
}

/// Mixed precision: the f32 master weights are sharded too, and carried
/// (gathered, then sharded again) from the SFT stage into the GRPO stage
/// (dropping them there, so that the GRPO stage starts from the bf16
/// weights, gave a relative difference of 2.7e-2).
#[test]
fn zero_stages_take_the_unsharded_sft_then_grpo_steps_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!("{SFT_2}{GRPO_2}");
    let exp = experiment(dir.path(), &stages, "[sft]\nbatch_size = 5\n");
    each_zero_stage(
        "SFT then GRPO, bf16",
        dir.path(),
        &exp,
        &["--set", "model.dtype=\"bf16\""],
    );
}

/// Micro-batches of one row: GRPO's 8 rows per rank, and SFT's 5
/// conversations split 2 + 3, so that the ranks run different numbers of
/// micro-batches (the one with fewer takes part in the last reduce-scatter
/// of stage 2 with zeros). Stage 2 reduce-scatters each micro-batch's
/// gradients, summed in another order than stage 0's and 1's whole sums.
#[test]
fn zero_stages_take_the_unsharded_steps_over_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!("{SFT_2}{GRPO_2}");
    let exp = experiment(dir.path(), &stages, "[sft]\nbatch_size = 5\n");
    // In f32 too, where the sums' order changes their last bits.
    let f32_sets = ["--set", "optim.micro_batch_size=1"];
    let f32_dir = dir.path().join("f32");
    each_zero_stage("micro-batches of one row, f32", &f32_dir, &exp, &f32_sets);
    let sets = [
        "--set",
        "model.dtype=\"bf16\"",
        "--set",
        "optim.micro_batch_size=1",
    ];
    each_zero_stage("micro-batches of one row, bf16", dir.path(), &exp, &sets);
    // What stage 2's collectives carried in an SFT step: a reduce-scatter of
    // the f32 gradients per micro-batch (3, the most of a rank), the new bf16
    // weights all-gathered, and a few hundred bytes of counts and flags.
    let sft = &steps(&dir.path().join("zero2"))[..2];
    payload_per_weight(dir.path(), sft, "stage 2, SFT", 3 * 4 + 2);
}

/// A copy of the directory tree `from` at `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Bytes of the tensors of a safetensors file.
fn tensor_bytes(path: &Path) -> f64 {
    Tensor::read_safetensors(path)
        .unwrap()
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as f64)
        .sum()
}

/// The bytes of optimizer state rank 0 says it read at a resume.
fn optimizer_bytes_read(output: &Output) -> f64 {
    let err = String::from_utf8_lossy(&output.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("bytes of optimizer state"))
        .unwrap_or_else(|| panic!("no resume line in:\n{err}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "bytes").unwrap();
    words[at - 1].parse().unwrap()
}

/// Checkpoints of ZeRO stages 1 and 2 on 2 ranks are sharded: one
/// optimizer file per rank, each about half of the whole state a stage-0
/// checkpoint holds, and rank 0 holds no whole state to write them. Each
/// resumes on 2 ranks under its stage (rank 0 reading about half of the
/// whole state, from its own file), on 1 rank, on 2 ranks without ZeRO and
/// (stage 2) under stage 1; a stage-0 checkpoint resumes under ZeRO 2; all
/// take the uninterrupted run's third step.
#[test]
fn zero_checkpoints_are_sharded_and_resume_on_any_number_of_ranks_and_stage() {
    let dir = tempfile::tempdir().unwrap();
    // GRPO's first step has no gradient (the rewards tie): stop after the
    // second, whose moments are not zero.
    let exp = experiment(dir.path(), &GRPO_2.replace("steps = 2", "steps = 3"), "");
    let start = initial_model(&exp, dir.path());
    let with = |extra: &[&str]| -> Vec<String> {
        ZERO_SETTINGS
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |out: &Path, extra: &[&str]| -> Output {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&exp, out, &args)
    };
    let straight = dir.path().join("straight");
    run(&straight, &["--nproc", "2"]);
    let check = |what: &str, resumed: &Path| {
        let d = relative_difference(
            &start,
            &straight.join("final-model"),
            &resumed.join("final-model"),
        );
        eprintln!("{what}: {d:.3e}");
        assert!(d < SAME_STEP, "{what}: the run went another way: {d:.3e}");
        assert_eq!(steps(resumed).len(), 3, "{what}");
    };
    let ckpt = "checkpoints/step-00000002";
    // The whole state, as stage 0 writes it.
    let plain = dir.path().join("zero0");
    run(&plain, &["--nproc", "2", "--max-steps", "2"]);
    let whole = tensor_bytes(&plain.join(ckpt).join("optimizer.safetensors"));
    let resumed = dir.path().join("zero0-on-zero2");
    copy_dir(&plain, &resumed);
    run(
        &resumed,
        &[
            "--resume",
            "--nproc",
            "2",
            "--set",
            "distributed.zero_stage=2",
        ],
    );
    check("step 2 without ZeRO, step 3 resumed under ZeRO 2", &resumed);
    for stage in [1, 2] {
        let zero = format!("distributed.zero_stage={stage}");
        let first = dir.path().join(format!("zero{stage}"));
        run(
            &first,
            &["--nproc", "2", "--set", &zero, "--max-steps", "2"],
        );
        let saved = first.join(ckpt);
        assert!(!saved.join("optimizer.safetensors").exists());
        for rank in 0..2 {
            let file = saved.join(format!("optimizer/rank-{rank:05}-of-00002.safetensors"));
            let share = tensor_bytes(&file) / whole;
            eprintln!("ZeRO {stage}: rank {rank}'s file holds {share:.4} of the whole state");
            assert!((0.5..0.51).contains(&share), "{share}");
        }
        // What rank 0 reads: its own shards (and the step) under ZeRO on
        // 2 ranks; everything without ZeRO, where a rank holds it all.
        let mut resumes = vec![
            (
                "2 ranks, same stage",
                vec!["--nproc", "2", "--set", zero.as_str()],
                0.5,
            ),
            ("1 rank", vec![], 1.0),
            (
                "2 ranks, no ZeRO",
                vec!["--nproc", "2", "--set", "distributed.zero_stage=0"],
                1.0,
            ),
        ];
        if stage == 2 {
            resumes.push((
                "2 ranks, ZeRO 1",
                vec!["--nproc", "2", "--set", "distributed.zero_stage=1"],
                0.5,
            ));
        }
        for (i, (what, extra, expect)) in resumes.into_iter().enumerate() {
            let out = dir.path().join(format!("zero{stage}-resume{i}"));
            copy_dir(&first, &out);
            let mut args = vec!["--resume"];
            args.extend(extra);
            let output = run(&out, &args);
            let read = optimizer_bytes_read(&output) / whole;
            eprintln!("ZeRO {stage}, resumed on {what}: rank 0 read {read:.4} of the whole state");
            assert!(
                read >= expect && read < expect * 1.02,
                "{what}: read {read} of the whole state, expected {expect}"
            );
            check(
                &format!("step 2 under ZeRO {stage}, step 3 on {what}"),
                &out,
            );
        }
    }
}

/// Mixed precision, and LoRA: a ZeRO-2 checkpoint's rank files hold the
/// f32 master shards (bf16) or the adapters' moments only (LoRA), and a
/// resume on 2 ranks under ZeRO 2 and on 1 rank takes the uninterrupted
/// run's third step from them (0 here; resuming from the bf16 weights
/// instead of the master shards gave 4.0e-2).
#[test]
fn bf16_and_lora_zero_checkpoints_resume_from_their_shards() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), &GRPO_2.replace("steps = 2", "steps = 3"), "");
    let start = initial_model(&exp, dir.path());
    let variants = [
        ("bf16", "model.dtype=\"bf16\"", "final-model", ".master"),
        (
            "LoRA",
            "model.lora={rank=4, alpha=8, merge_on_save=true}",
            "final-model-merged",
            ".exp_avg",
        ),
    ];
    for (variant, set, model, part) in variants {
        let args = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut all = ZERO_SETTINGS.to_vec();
            all.extend(["--set", set]);
            all.extend(extra);
            all
        };
        let root = dir.path().join(variant);
        let straight = root.join("straight");
        run_cli(&exp, &straight, &args(&["--nproc", "2"]));
        let first = root.join("first");
        let zero2 = ["--nproc", "2", "--set", "distributed.zero_stage=2"];
        run_cli(
            &exp,
            &first,
            &args(&[&zero2[..], &["--max-steps", "2"]].concat()),
        );
        let ckpt = first.join("checkpoints/step-00000002/optimizer");
        let rank1 = ckpt.join("rank-00001-of-00002.safetensors");
        let names: Vec<String> = Tensor::read_safetensors(&rank1)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with(part)),
            "{variant}: no {part} shards in {names:?}"
        );
        let layout = std::fs::read_to_string(ckpt.join("layout.json")).unwrap();
        if variant == "LoRA" {
            // Only the adapters train, and only they are sharded.
            assert!(
                layout.contains("lora_A") && !layout.contains("\"model.norm.weight\""),
                "{layout}"
            );
        }
        for (what, extra) in [("2 ranks, ZeRO 2", &zero2[..]), ("1 rank", &[][..])] {
            let out = root.join(what.replace([' ', ','], "-"));
            copy_dir(&first, &out);
            run_cli(&exp, &out, &args(&[&["--resume"][..], extra].concat()));
            let d = relative_difference(&start, &straight.join(model), &out.join(model));
            eprintln!("{variant}: step 2 under ZeRO 2, step 3 resumed on {what}: {d:.3e}");
            assert!(d < SAME_STEP, "{variant}: resumed on {what}: {d:.3e}");
            assert_eq!(steps(&out).len(), 3, "{variant}: {what}");
        }
    }
}

/// A learning rate that makes the weights diverge: the first update leaves
/// them huge, the second step's loss and gradients are no longer finite. The
/// run stops there with the reason, before the update and before any
/// checkpoint of it, alone and in a group of one (whose metrics cross the
/// store); it used to train on, write NaN weights and then fail reading its
/// own metrics.jsonl.
#[test]
fn a_diverging_update_stops_the_run_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let stages = SFT_2.replace("steps = 2", "steps = 3");
    let exp = experiment(dir.path(), &stages, "");
    let lr = ["--set", "optim.lr=1e30"];
    let group = ["--set", "distributed.group_of_one=true", "--nproc", "1"];
    for (name, args) in [
        ("alone", lr.to_vec()),
        ("group", [&lr[..], &group].concat()),
    ] {
        let run_dir = dir.path().join(name);
        let out = Command::new(BIN)
            .arg("run")
            .arg(&exp)
            .args(["--set", &format!("output_dir=\"{}\"", run_dir.display())])
            .args(&args)
            .current_dir(dir.path())
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(
            err.contains("step 2: the update") && err.contains("the gradients' norm is"),
            "{name}: {err}"
        );
        assert!(err.contains("lower optim.lr"), "{name}: {err}");
        let recs = steps(&run_dir);
        assert_eq!(recs.len(), 1, "{name}: only step 1 is recorded");
        assert!(recs[0].values["sft/loss"].is_finite());
        let checkpoints = run_dir.join("checkpoints");
        let written = if checkpoints.exists() {
            files(&checkpoints)
        } else {
            Vec::new()
        };
        assert!(written.is_empty(), "{name}: {written:?}");
    }
}
