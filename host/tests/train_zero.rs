//! ZeRO stages 1 and 2 end to end on CPU (Gloo): the `lmmhost` binary on 2
//! ranks under each stage against stage 0, and the sharded optimizer
//! checkpoints resumed on other numbers of ranks and stages.

mod train_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use lmmhost::train::experiment::Experiment;
use lmmhost::train::memory_plan::PlanInputs;
use lmmhost_model::config::ModelConfig;
use tch::Tensor;
use train_support::ranks::*;
use train_support::*;

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
