//! A full disk and a read-only checkpoint directory during training, made
//! real: `lmmhost run` runs in a new user and mount namespace (`unshare -rm`,
//! no root needed) with a small tmpfs mounted on its checkpoint directory.
//! The mount is private to that namespace, so the script copies what the run
//! left there into `saved/` before it ends; the test then resumes from it
//! outside, where space is plentiful.

mod cli_support;
mod faults_support;
mod train_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::run;

use faults_support::{comparable_steps, experiment, opts, widen};

const STEPS: u64 = 6;
const EXTRA: &str = "[checkpoint]\nevery = 1\nkeep_last = 10\n";
/// The exit status the scripts use when the namespace or the mount fails.
const NO_NAMESPACE: i32 = 97;

/// An experiment of STEPS steps whose model makes a checkpoint of a few MB.
fn setup(dir: &Path) -> PathBuf {
    let path = experiment(dir, STEPS, EXTRA);
    widen(dir, 128, 256, 1);
    std::fs::create_dir_all(dir.join("run/checkpoints")).unwrap();
    std::fs::create_dir_all(dir.join("saved")).unwrap();
    path
}

/// Runs `script` with `sh` in `dir` inside a new user and mount namespace,
/// with `$LMMHOST` the binary; returns the exit status and stdout + stderr.
/// A machine that cannot make the namespace fails the test, loudly.
fn in_namespace(dir: &Path, script: &str) -> (i32, String) {
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .current_dir(dir)
        .env("LMMHOST", env!("CARGO_BIN_EXE_lmmhost"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code != NO_NAMESPACE && !text.contains("unshare: "),
        "this test needs `unshare -rm` (user and mount namespaces) and a tmpfs mount in it:\n{text}"
    );
    (code, text)
}

/// The metrics of an uninterrupted run of the same experiment, and the size
/// in KiB (4 KiB pages per file) of one of its checkpoints.
fn reference() -> (Vec<String>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path());
    run(&Experiment::load(&path).unwrap(), &opts(false, None)).unwrap();
    let step = dir.path().join("run/checkpoints/step-00000002");
    let pages: u64 = walk(&step)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len().div_ceil(4096))
        .sum();
    (comparable_steps(&dir.path().join("run")), pages * 4)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What the run left in its checkpoint directory (copied to `saved/`): the
/// complete checkpoints, each of which loads, and no partial one; `latest`
/// names the newest. Returns the steps.
fn complete_checkpoints(saved: &Path) -> Vec<u64> {
    let mut steps = Vec::new();
    for e in std::fs::read_dir(saved).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".incomplete-"),
            "a partial write is left: {name}"
        );
        if let Some(step) = name.strip_prefix("step-") {
            lmmhost_model::checkpoint::load(
                &e.path().join("model"),
                tch::Device::Cpu,
                tch::Kind::Float,
            )
            .unwrap_or_else(|err| panic!("{name}: {err:#}"));
            steps.push(step.parse::<u64>().unwrap());
        }
    }
    steps.sort_unstable();
    let latest = std::fs::read_to_string(saved.join("latest")).unwrap();
    assert_eq!(latest.trim(), format!("step-{:08}", steps.last().unwrap()));
    steps
}

/// Puts the saved checkpoints where the run keeps them (as a user would
/// after moving the run to a disk with room) and resumes: the run ends with
/// the metrics of an uninterrupted one, step for step.
fn resume_outside(dir: &Path, path: &Path, want: &[String]) {
    let ckpts = dir.join("run/checkpoints");
    std::fs::remove_dir(&ckpts).unwrap(); // empty outside the namespace
    std::fs::rename(dir.join("saved"), &ckpts).unwrap();
    cli_support::ok(dir, &["run", path.to_str().unwrap(), "--resume"]);
    assert_eq!(comparable_steps(&dir.join("run")), want);
}

/// The disk holding the checkpoints fills up at the third checkpoint: the
/// run stops naming the directory and the cause, the two complete
/// checkpoints are intact, the partial one is gone, and `--resume` with room
/// continues from the last complete one.
#[test]
fn a_full_disk_at_checkpoint_time_loses_nothing() {
    let (want, kib) = reference();
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path());
    // Room for two checkpoints and half of a third.
    let size = kib * 2 + kib / 2 + 64;
    let script = format!(
        "mount -t tmpfs -o size={size}k tmpfs run/checkpoints || exit {NO_NAMESPACE}\n\
         \"$LMMHOST\" run exp.toml; rc=$?\n\
         cp -a run/checkpoints/. saved/ || exit 98\n\
         exit $rc\n"
    );
    let (code, out) = in_namespace(dir.path(), &script);
    assert_ne!(code, 0, "the run should fail on the full disk:\n{out}");
    let ckpts = dir.path().join("run/checkpoints");
    assert!(
        out.contains(&format!("{}/.incomplete-step-00000003", ckpts.display()))
            && out.contains(&format!("the disk holding {} is full", ckpts.display()))
            && out.contains("No space left on device")
            && out.contains("step-00000002; checkpoint.keep_last = 10 needs room for 11"),
        "{out}"
    );
    assert_eq!(complete_checkpoints(&dir.path().join("saved")), [1, 2]);
    resume_outside(dir.path(), &path, &want);
}

/// A checkpoint directory on a read-only mount is refused before any step,
/// naming the key and the directory.
#[test]
fn a_read_only_checkpoint_dir_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let script = format!(
        "mount -t tmpfs tmpfs run/checkpoints && mount -o remount,ro run/checkpoints || exit {NO_NAMESPACE}\n\
         exec \"$LMMHOST\" run exp.toml\n"
    );
    let (code, out) = in_namespace(dir.path(), &script);
    assert_ne!(code, 0, "{out}");
    let ckpts = dir.path().join("run/checkpoints");
    assert!(
        out.contains("checkpoint.dir")
            && out.contains(&ckpts.display().to_string())
            && out.contains("Read-only file system"),
        "{out}"
    );
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap_or_default();
    assert!(metrics.is_empty(), "steps ran: {metrics}");
}

/// The checkpoint directory turns read-only after the second checkpoint:
/// the run stops at the next one naming the directory and the cause, the
/// checkpoints written before are intact, and `--resume` continues from the
/// last of them.
#[test]
fn a_checkpoint_dir_turning_read_only_mid_run_loses_nothing() {
    let (want, _) = reference();
    // Remounting fails (busy) while a file there is open for writing: retry
    // until it succeeds; a run that ends first (a busy machine can keep the
    // directory busy through the last checkpoint) is a void attempt.
    let script = format!(
        "mount -t tmpfs tmpfs run/checkpoints || exit {NO_NAMESPACE}\n\
         \"$LMMHOST\" run exp.toml & pid=$!\n\
         until grep -qs step-00000002 run/checkpoints/latest; do kill -0 $pid 2>/dev/null || break; sleep 0.01; done\n\
         until mount -o remount,ro run/checkpoints 2>/dev/null; do kill -0 $pid 2>/dev/null || {{ echo RUN-ENDED-FIRST; break; }}; sleep 0.01; done\n\
         echo REMOUNT-TRIED\n\
         wait $pid; rc=$?\n\
         cp -a run/checkpoints/. saved/ || exit 98\n\
         exit $rc\n"
    );
    let mut attempts = Vec::new();
    let (dir, path, code, out) = loop {
        let dir = tempfile::tempdir().unwrap();
        let path = setup(dir.path());
        let (code, out) = in_namespace(dir.path(), &script);
        assert!(out.contains("REMOUNT-TRIED"), "{out}");
        if !out.contains("RUN-ENDED-FIRST") {
            break (dir, path, code, out);
        }
        attempts.push(out);
        assert!(
            attempts.len() < 5,
            "the run ended before the directory could be remounted, 5 times:\n{}",
            attempts.join("\n---\n")
        );
    };
    assert_ne!(
        code, 0,
        "the run should fail on the read-only directory:\n{out}"
    );
    let ckpts = dir.path().join("run/checkpoints");
    assert!(
        out.contains(&ckpts.display().to_string()) && out.contains("Read-only file system"),
        "{out}"
    );
    let steps = complete_checkpoints(&dir.path().join("saved"));
    assert!(steps.len() >= 2 && steps[..2] == [1, 2], "{steps:?}");
    resume_outside(dir.path(), &path, &want);
}
