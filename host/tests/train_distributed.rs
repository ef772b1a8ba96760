//! Data-parallel training end to end on CPU (Gloo): the `lmmhost` binary on
//! 2 ranks, started by `--nproc` or, as torchrun starts them, with the launch
//! variables set, against the same binary on 1 rank. The tiny char-qwen2
//! trains on one thread per rank.

mod train_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lmmhost::metrics::log::{read_records, StepRecord};
use train_support::ranks::*;
use train_support::*;

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

/// The gradient all-reduce overlapped with the last micro-batch's backward
/// pass, in 2 KiB buckets so that most of them start before it ends, takes
/// the steps of the all-reduce after the backward (ZeRO stage 0, and stage
/// 1 on its reduced sums), with the same bytes on the wire; micro-batches
/// of 3 rows put earlier micro-batches' sums under the overlapped one.
#[test]
fn the_all_reduce_overlapped_with_the_backward_takes_the_same_steps() {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!("{SFT_2}{GRPO_2}");
    let exp = experiment(dir.path(), &stages, "[sft]\nbatch_size = 5\n");
    let start = initial_model(&exp, dir.path());
    let run = |name: &str, overlap: bool, zero: u8| {
        let out = dir.path().join(name);
        let overlap = format!("distributed.overlap_backward={overlap}");
        let zero = format!("distributed.zero_stage={zero}");
        let args = [
            "--nproc",
            "2",
            "--set",
            "distributed.bucket_mb=0.002",
            "--set",
            "optim.micro_batch_size=3",
            "--set",
            &overlap,
            "--set",
            &zero,
        ];
        run_cli(&exp, &out, &args);
        out
    };
    let after = run("after", false, 0);
    let during = run("during", true, 0);
    let zero1 = run("zero1", true, 1);
    let model = |d: &Path| d.join("final-model");
    let d = relative_difference(&start, &model(&after), &model(&during));
    eprintln!("overlapped vs after the backward: relative difference {d:.3e}");
    // 2 ranks add a + b whatever the bucket: the same bits (measured 0).
    assert!(
        d < 1e-9,
        "the overlapped all-reduce took another step: {d:.3e}"
    );
    let d1 = relative_difference(&start, &model(&after), &model(&zero1));
    eprintln!("overlapped ZeRO-1 vs stage 0 after the backward: {d1:.3e}");
    assert!(
        d1 < SAME_STEP,
        "overlapped ZeRO-1 took another step: {d1:.3e}"
    );
    let (a, b, c) = (steps(&after), steps(&during), steps(&zero1));
    assert_eq!((a.len(), b.len(), c.len()), (4, 4, 4));
    for ((a, b), c) in a.iter().zip(&b).zip(&c) {
        assert_close(a, b, &["grad_norm"], 1e-6);
        assert_close(a, c, &["grad_norm"], 1e-4);
        assert_eq!(
            a.values["dist/bytes"], b.values["dist/bytes"],
            "step {}",
            a.step
        );
        assert!(!a.values.contains_key("dist/overlap"));
        for r in [b, c] {
            let share = r.values["dist/overlap"];
            eprintln!(
                "step {}: {share:.3} of the bytes started during the backward",
                r.step
            );
            assert!(share > 0.5 && share < 1.0, "step {}: {share}", r.step);
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
