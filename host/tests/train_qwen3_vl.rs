//! The trainer on Qwen3-VL end to end on CPU: the shipped tiny Qwen3-VL
//! (configs/models/tiny-qwen3-vl, random init) through the quickstart's
//! plugins: SFT on image descriptions, then multimodal GRPO on counting
//! images (KV-cached rollouts over shared prompts, KL to the reference model,
//! an entropy bonus) with the vision tower frozen, checkpoints and a resume,
//! evaluation, then `lmmhost eval` and `lmmhost logits` on the trained model,
//! which transformers loads unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::{run, RunOptions};
use lmmhost_model::checkpoint;
use tch::{Device, Kind};

mod train_support;
use train_support::{comparable, loads_in_transformers, repo, steps, stop_and_resume};

fn plugin(name: &str) -> PathBuf {
    let p = repo().join("target/plugins").join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

const SCHEDULE: &str = r#"
[[stages]]
name = "describe"
kind = "sft"
datasets = { describe = 1.0 }
steps = 2

[[stages]]
name = "count"
kind = "grpo"
datasets = { count-rl = 1.0 }
steps = 2
[stages.overrides]
learning_rate = 1e-3
freeze_vision = true
"#;

/// The quickstart's datasets and plugins on the tiny Qwen3-VL, at a test budget.
fn experiment(dir: &Path, out: &str) -> Experiment {
    for p in ["loader-synthetic", "reward-math", "schedule-staged"] {
        plugin(p);
    }
    std::fs::write(dir.join("schedule.toml"), SCHEDULE).unwrap();
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
extends = "{base}"
name = "qwen3-vl-test"
output_dir = "{out}"
[model]
path = "{model}"
[schedule]
file = "schedule.toml"
[rollout]
group_size = 4
prompts_per_step = 4
max_response_tokens = 8
[optim]
lr = 3e-3
warmup_steps = 0
micro_batch_size = 8
[sft]
batch_size = 8
[grpo.kl]
coef = 0.01
[grpo.entropy]
coef = 0.01
[checkpoint]
every = 1
keep_last = 4
[eval]
datasets = ["image-eval"]
limit = 4
[logging]
tensorboard = false
plots = false
progress = false
"#,
            base = repo().join("configs/quickstart.toml").display(),
            model = repo().join("configs/models/tiny-qwen3-vl").display(),
        ),
    )
    .unwrap();
    Experiment::load(&path).unwrap()
}

fn params(dir: &Path) -> BTreeMap<String, tch::Tensor> {
    let m = checkpoint::load(dir, Device::Cpu, Kind::Float).unwrap();
    assert!(m.source.unused.is_empty(), "{:?}", m.source.unused);
    m.model.named_parameters().into_iter().collect()
}

#[test]
fn qwen3_vl_sft_and_multimodal_grpo_with_frozen_vision_checkpoints_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let whole = run(&experiment(root, "whole"), &RunOptions::default()).unwrap();
    assert_eq!(whole.steps, 4);
    let recs = steps(&whole.output_dir);
    let kinds: Vec<&str> = recs.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["sft", "sft", "grpo", "grpo"]);
    for r in &recs {
        let g = r.values["grad_norm"];
        assert!(g.is_finite() && g > 0.0, "step {}: grad_norm {g}", r.step);
    }
    for r in recs.iter().filter(|r| r.kind == "grpo") {
        // The rollouts saw the images and the update measured KL and entropy.
        for key in ["kl", "entropy"] {
            let v = r.values[key];
            assert!(v.is_finite(), "step {}: {key} {v}", r.step);
        }
        assert!(r.values["entropy"] > 0.0);
    }
    let row = whole
        .summary
        .iter()
        .find(|r| r.dataset == "image-eval" && r.when.starts_with("after count"))
        .unwrap_or_else(|| panic!("no evaluation after the GRPO stage: {:?}", whole.summary));
    assert!(row.accuracy.is_finite() && row.prompts == 4);

    // SFT trained the whole model; GRPO (freeze_vision) left the tower alone.
    let ckpt = |step: u64| {
        whole
            .output_dir
            .join(format!("checkpoints/step-{step:08}/model"))
    };
    let after_sft = params(&ckpt(2));
    let last = params(&whole.final_model);
    assert_eq!(after_sft.len(), last.len());
    let (mut vision, mut language) = (0, 0);
    for (name, t) in &last {
        let same = t.equal(&after_sft[name]);
        if name.starts_with("visual.") {
            assert!(same, "{name} changed while the vision tower was frozen");
            vision += 1;
        } else if !same {
            language += 1;
        }
    }
    assert!(
        vision > 0 && language > 0,
        "{vision} vision, {language} changed language tensors"
    );

    // Stopped after step 3 and resumed: the same steps, number for number.
    let exp = experiment(root, "resumed");
    let resumed = stop_and_resume(&exp, 3);
    assert_eq!(resumed.steps, 4);
    let again = steps(&resumed.output_dir);
    assert_eq!(again.len(), recs.len());
    for (a, b) in recs.iter().zip(&again) {
        assert_eq!(comparable(a), comparable(b), "step {}", a.step);
    }
    let resumed_params = params(&resumed.final_model);
    for (name, t) in &last {
        assert!(
            t.equal(&resumed_params[name]),
            "{name} differs after resume"
        );
    }

    trained_model_serves_the_commands(root, &whole.final_model);
}

/// `lmmhost eval` and `lmmhost logits` on the trained Qwen3-VL, and
/// transformers' from_pretrained on it.
fn trained_model_serves_the_commands(root: &Path, model: &Path) {
    let answers = root.join("answers.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .arg("eval")
        .arg("--model")
        .arg(model)
        .arg("--loader")
        .arg(plugin("loader-synthetic"))
        .args([
            "--loader-config",
            "task = \"shapes-count\"\nsplit = \"eval\"\nlen = 8\nseed = 6",
        ])
        .arg("--reward")
        .arg(plugin("reward-math"))
        .args(["--samples", "2", "--temperature", "1.0", "--pass-k", "1,2"])
        .args(["--limit", "4", "--max-response-tokens", "8"])
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
    assert!(stdout.contains("pass@2"), "{stdout}");
    let answered = std::fs::read_to_string(&answers).unwrap().lines().count();
    assert_eq!(answered, 8);

    let image = repo().join("tests/fixtures/processor/wide_100x60.png");
    let prompts = root.join("prompts.jsonl");
    let row = serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "image", "image": image.display().to_string()},
        {"type": "text", "text": "How many shapes?"},
    ]}]});
    std::fs::write(&prompts, format!("{row}\n")).unwrap();
    let dump = root.join("dump.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .arg("logits")
        .arg("--model")
        .arg(model)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(&dump)
        .args(["--greedy-tokens", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: BTreeMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&dump)
        .unwrap()
        .into_iter()
        .collect();
    // 100x60 -> 96x64 pixels: 6x4 patches of 16.
    let grid: Vec<i64> = Vec::try_from(t["image_grid_thw"].flatten(0, -1)).unwrap();
    assert_eq!(grid, vec![1, 4, 6]);
    assert_eq!(t["position_ids"].size()[0], 3);
    assert_eq!(t["greedy_tokens"].size(), vec![1, 4]);

    // The written model loads in transformers with every key used.
    loads_in_transformers(model, "Qwen3VLForConditionalGeneration");
}
