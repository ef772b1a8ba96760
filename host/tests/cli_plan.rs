//! `lmmhost plan` on the Qwen2.5-VL-3B shape config: the parts follow the
//! bytes-per-parameter table of train/memory_plan/mod.rs, and the commands
//! docs/performance.md shows run as written.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .current_dir(repo())
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn plan_of_the_3b_shape() {
    let model = format!(
        "model.path=\"{}\"",
        repo().join("configs/models/qwen2.5-vl-3b").display()
    );
    let out = plan(&[
        "configs/quickstart.toml",
        "--json",
        "--gpu-memory",
        "141GB",
        "--set",
        &model,
        "--set",
        "model.dtype=\"bf16\"",
        "--set",
        "grpo.kl.coef=0.01",
        "--set",
        "grpo.kl.reference_device=\"cpu\"",
        "--set",
        "optim.micro_batch_size=1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = 3_754_622_976u64;
    let part = |k: &str| v["plan"][k].as_u64().unwrap();
    assert_eq!(part("weights"), 2 * p);
    assert_eq!(part("master_weights"), 4 * p);
    assert_eq!(part("optimizer"), 8 * p);
    assert_eq!(part("gradients"), 6 * p);
    // On the CPU, the reference takes none of the accelerator's memory.
    assert_eq!(part("reference_model"), 0);
    assert_eq!(v["gpu_memory"].as_u64().unwrap(), 141_000_000_000);
    assert!(v["largest_micro_batch"].as_u64().unwrap() >= 1);

    let f32_run = plan(&[
        "configs/quickstart.toml",
        "--json",
        "--gpu-memory",
        "40GiB",
        "--set",
        &model,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&f32_run.stdout).unwrap();
    assert_eq!(v["fits"], false);
    let switches = v["switches"].to_string();
    assert!(
        switches.contains("model.dtype = \\\"bf16\\\""),
        "{switches}"
    );

    // One of 2 data-parallel ranks: the whole model and optimizer state,
    // half the prompts' keys and values.
    let ranks = |n: &str| {
        let out = plan(&[
            "configs/quickstart.toml",
            "--json",
            "--nproc",
            n,
            "--set",
            &model,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["plan"].clone()
    };
    let (one, two) = (ranks("1"), ranks("2"));
    for k in ["weights", "optimizer", "gradients"] {
        assert_eq!(one[k], two[k], "{k}");
    }
    let kv = |p: &serde_json::Value| p["kv_cache"].as_u64().unwrap();
    assert_eq!(kv(&one), 2 * kv(&two));
}

/// When nothing fits, the plan says so instead of "largest ...: 0"; it
/// suggests freezing the vision tower only when the tower trains (under
/// LoRA, only when it has adapters).
#[test]
fn plan_says_when_nothing_fits_and_which_switches_apply() {
    let model = format!(
        "model.path=\"{}\"",
        repo().join("configs/models/qwen2.5-vl-3b").display()
    );
    let out = plan(&[
        "configs/quickstart.toml",
        "--gpu-memory",
        "1GiB",
        "--set",
        &model,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("no micro_batch_size fits, not even 1 row") && !text.contains("fits: 0"),
        "{text}"
    );
    let switches = |lora: &str| {
        let out = plan(&[
            "configs/quickstart.toml",
            "--json",
            "--gpu-memory",
            "1GiB",
            "--set",
            &model,
            "--set",
            lora,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["switches"].to_string()
    };
    assert!(!switches("model.lora={rank=8, alpha=16}").contains("grpo.freeze_vision"));
    assert!(switches("model.lora={rank=8, alpha=16, vision=true}").contains("grpo.freeze_vision"));
}

/// Every `lmmhost plan` line of docs/performance.md and docs/recipes.md
/// runs as shown.
#[test]
fn documented_plan_commands_run() {
    let doc = ["docs/performance.md", "docs/recipes.md"]
        .map(|f| std::fs::read_to_string(repo().join(f)).unwrap())
        .join("\n");
    let mut n = 0;
    for line in doc.lines().filter(|l| l.starts_with("lmmhost plan ")) {
        let out = Command::new("sh")
            .current_dir(repo())
            .arg("-c")
            .arg(format!(
                "{} {}",
                env!("CARGO_BIN_EXE_lmmhost"),
                &line["lmmhost ".len()..]
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("peak"),
            "{line}"
        );
        n += 1;
    }
    assert!(
        n >= 6,
        "docs/performance.md and docs/recipes.md show {n} lmmhost plan commands"
    );
}

/// A plan needs the model's config and the settings only: plugin, data and
/// image files that are not there (yet) are no error, while `train` refuses them.
#[test]
fn plan_does_not_need_the_data_files() {
    let missing = [
        "--set",
        "plugins.math.wasm=\"/nonexistent/reward-math.wasm\"",
        "--set",
        "datasets.text-rl.files=[\"/nonexistent/train.jsonl\"]",
        "--set",
        "datasets.text-rl.images=[\"/nonexistent/images\"]",
    ];
    let mut args = vec!["configs/quickstart.toml"];
    args.extend(missing);
    let out = plan(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("peak"));
    let check = Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .current_dir(repo())
        .args(["check", "configs/quickstart.toml"])
        .args(missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "check accepted missing files");
    assert!(err.contains("/nonexistent/train.jsonl"), "{err}");
}
