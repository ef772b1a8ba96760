//! What the data-parallel tests share: the `lmmhost` binary run on 1 rank
//! and on 2, the weights and files of their runs compared, and the payload
//! their collectives carried.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lmmhost::metrics::log::StepRecord;
use lmmhost::train::policy::Policy;
use tch::Tensor;

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_lmmhost");

/// `lmmhost run exp --set output_dir="<out>" <SMALL> <extra>`; panics with
/// its output unless it succeeds.
pub fn run_cli(exp: &Path, out: &Path, extra: &[&str]) -> Output {
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

pub fn weights(model_dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(model_dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// ||b - a|| / ||a - start||: how far two runs' weights are apart, relative
/// to how far training moved them.
pub fn relative_difference(start: &Path, a: &Path, b: &Path) -> f64 {
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
pub fn initial_model(exp: &Path, dir: &Path) -> PathBuf {
    let exp = Experiment::load(exp).unwrap();
    let policy = Policy::load(&exp.model, None, exp.seed).unwrap();
    let out = dir.join("initial-model");
    policy.save(&out).unwrap();
    out
}

/// Every file under `dir`, relative to it.
pub fn files(dir: &Path) -> Vec<String> {
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
pub fn assert_close(a: &StepRecord, b: &StepRecord, keys: &[&str], tol: f64) {
    let mut worst = 0.0f64;
    for k in keys {
        let (x, y) = (a.values[*k], b.values[*k]);
        let d = (x - y).abs() / x.abs().max(1.0);
        worst = worst.max(d);
        assert!(d <= tol, "step {} {k}: {x} on 1 rank, {y} on 2", a.step);
    }
    eprintln!("step {}: metrics within {worst:.1e} of one rank's", a.step);
}

pub const GRPO_2: &str = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
"#;

pub const SFT_2: &str = r#"
[[stages]]
name = "cold-start"
kind = "sft"
datasets = { sft = 1.0 }
steps = 2
"#;

/// Small groups on few prompts: the step is seconds; 4 prompts split 2 + 2.
pub const SMALL: [&str; 4] = [
    "--set",
    "rollout.group_size=4",
    "--set",
    "rollout.prompts_per_step=4",
];

/// What the update of a GRPO step logs, compared between 1 rank and 2.
pub const GRPO_METRICS: [&str; 5] = [
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
pub const SAME_STEP: f64 = 5e-4;

/// Runs the experiment of `stages` on 1 rank and on 2 (`--nproc 2`): the
/// run directories and the 2-rank launcher's output, once the weights were
/// found within [`SAME_STEP`], one record logged per step and the same
/// files written (by rank 0 alone).
pub fn one_rank_and_two(
    what: &str,
    dir: &Path,
    stages: &str,
    extra: &str,
) -> (PathBuf, PathBuf, Output) {
    one_rank_and_two_of(what, dir, &experiment(dir, stages, extra), &[])
}

/// [`one_rank_and_two`] of the experiment file `exp`, both runs with `args`.
pub fn one_rank_and_two_of(
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
pub fn gradient_payload(dir: &Path, steps: &[StepRecord], what: &str) {
    payload_per_weight(dir, steps, what, 4);
}

/// As [`gradient_payload`], for `per_weight` bytes of collectives' payload
/// per weight and step.
pub fn payload_per_weight(dir: &Path, steps: &[StepRecord], what: &str, per_weight: u8) {
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
pub fn failure_lines(dir: &Path) -> Vec<String> {
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
pub fn with_bad_rows(exp: &Path, rows: usize, bad: impl Fn(usize) -> bool) {
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
