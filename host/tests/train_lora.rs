//! Training with `model.lora` on CPU (the tiny random Qwen2 of the trainer
//! tests): an SFT step and GRPO steps in mixed precision change the adapters
//! only, only they have optimizer state and f32 masters, checkpoints are PEFT
//! adapter directories that resume step for step, and the merged final model
//! is the base plus the adapters.

mod train_support;

use std::path::Path;

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::run;
use lmmhost::train::run::RunOptions;
use lmmhost_model::checkpoint;
use lmmhost_model::config::ModelConfig;
use tch::{Device, Kind, Tensor};
use train_support::*;

const STAGES: &str = r#"
[[stages]]
name = "warm"
kind = "sft"
datasets = { sft = 1.0 }
steps = 1

[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 2
"#;

const LORA: &str = "lora = { rank = 4, alpha = 8, merge_on_save = true }\n";

fn lora_experiment(dir: &Path) -> Experiment {
    lora_experiment_with(dir, "bf16", "")
}

fn lora_experiment_with(dir: &Path, dtype: &str, kl: &str) -> Experiment {
    let extra = format!("[checkpoint]\nevery = 2\nkeep_last = 2\n[grpo.kl]\ncoef = 0.05\n{kl}");
    let path = experiment(dir, STAGES, &extra);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "threads = 1\n",
        &format!("threads = 1\ndtype = \"{dtype}\"\n{LORA}"),
    );
    std::fs::write(&path, text).unwrap();
    Experiment::load(&path).unwrap()
}

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn lora_trains_only_the_adapters_and_resumes_step_for_step() {
    let a = tempfile::tempdir().unwrap();
    let full = run(&lora_experiment(a.path()), &RunOptions::default()).unwrap();
    let b = tempfile::tempdir().unwrap();
    let resumed = stop_and_resume(&lora_experiment(b.path()), 2);
    assert_eq!(resumed.steps, 3);
    let (ra, rb) = (steps(&full.output_dir), steps(&resumed.output_dir));
    assert_eq!(ra.len(), 3);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(comparable(x), comparable(y), "step {} differs", x.step);
    }

    // A checkpoint: the adapter directory and the adapters' optimizer state only.
    let ck = b.path().join("run/checkpoints/step-00000002");
    assert!(ck.join("model/adapter_config.json").is_file());
    assert!(!ck.join("model/model.safetensors").exists());
    let opt = tensors(&ck.join("optimizer.safetensors"));
    let names: Vec<&str> = opt.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("lora_A.weight.master")));
    assert!(names.iter().any(|n| n.ends_with("lora_B.weight.exp_avg")));
    assert!(
        names.iter().all(|n| *n == "step" || n.contains(".lora_")),
        "{names:?}"
    );

    // The adapters trained: every B moved away from its zero start.
    let adapter = tensors(&full.final_model.join("adapter_model.safetensors"));
    assert_eq!(
        adapter.len(),
        2 * 7 * 2,
        "2 layers x 7 projections x (A, B)"
    );
    for (k, t) in &adapter {
        assert!(k.starts_with("base_model.model.model.layers."), "{k}");
        if k.ends_with("lora_B.weight") {
            assert!(t.abs().max().double_value(&[]) > 0.0, "{k} never trained");
        }
    }

    // The merged model is the untouched base (the seeded random init in
    // bf16) plus scaling * B A on the adapted layers and nothing else.
    let model_dir = a.path().join("model");
    let base = checkpoint::init_random_seeded(
        ModelConfig::from_dir(&model_dir).unwrap(),
        None,
        Device::Cpu,
        Kind::BFloat16,
        5,
    )
    .unwrap();
    let merged = checkpoint::load(
        &a.path().join("run/final-model-merged"),
        Device::Cpu,
        Kind::BFloat16,
    )
    .unwrap();
    let merged: std::collections::HashMap<String, Tensor> =
        merged.model.named_parameters().into_iter().collect();
    let adapter: std::collections::HashMap<String, Tensor> = adapter.into_iter().collect();
    let mut adapted = 0;
    for (name, w) in base.model.named_parameters() {
        let m = &merged[&name];
        let layer = name.strip_suffix(".weight").unwrap_or(&name);
        let a_key = format!("base_model.model.{layer}.lora_A.weight");
        match adapter.get(&a_key) {
            None => assert!(m.equal(&w), "{name} changed without an adapter"),
            Some(la) => {
                adapted += 1;
                let lb = &adapter[&a_key.replace("lora_A", "lora_B")];
                let delta = lb.to_kind(Kind::Float).matmul(&la.to_kind(Kind::Float)) * 2.0;
                let want = (w.to_kind(Kind::Float) + delta).to_kind(Kind::BFloat16);
                assert!(m.equal(&want), "{name} is not base + scaling * B A");
            }
        }
    }
    assert_eq!(adapted, 14);
}

/// The KL reference under LoRA is the policy with its adapters off: the
/// same numbers, step for step, as a separately loaded copy of the base
/// (which `reference_dtype` forces).
#[test]
fn adapters_off_reference_equals_a_loaded_base_copy() {
    let a = tempfile::tempdir().unwrap();
    let initial = "reference = \"initial\"\n";
    let shared = run(
        &lora_experiment_with(a.path(), "f32", initial),
        &RunOptions::default(),
    )
    .unwrap();
    // No copy of the reference was written or loaded.
    assert!(!a.path().join("run/references").exists());
    let b = tempfile::tempdir().unwrap();
    let forced = format!("{initial}reference_dtype = \"f32\"\n");
    let copy = lora_experiment_with(b.path(), "f32", &forced);
    let copied = run(&copy, &RunOptions::default()).unwrap();
    let (ra, rb) = (steps(&shared.output_dir), steps(&copied.output_dir));
    assert_eq!(ra.len(), 3);
    assert!(ra[2].values["kl"] > 0.0, "{:?}", ra[2].values);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(comparable(x), comparable(y), "step {} differs", x.step);
    }
}

#[test]
fn bad_lora_settings_are_refused_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = experiment(dir.path(), STAGES, "[grpo]\nfreeze_language = true\n");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "threads = 1\n",
        "threads = 1\ndtype = \"bf16-pure\"\nactivation_checkpointing = true\nlora = { rank = 0, alpha = 0, dropout = 1.0, targets = [\"qproj\"] }\n",
    );
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", Experiment::load(&path).err().unwrap());
    for want in [
        "model.lora.rank = 0: must be >= 1",
        "model.lora.alpha = 0: must be > 0",
        "model.lora.dropout = 1.0: must be in [0, 1)",
        "model.lora.targets: unknown target \"qproj\"",
        "model.lora with model.dtype = \"bf16-pure\"",
        "grpo.freeze_language with model.lora and model.lora.vision = false",
        "model.lora.dropout = 1 with model.activation_checkpointing = true",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// A stage that freezes what LoRA trains is refused when it starts, naming
/// the stage and both keys.
#[test]
fn a_stage_freezing_every_adapter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!("{STAGES}\n[stages.overrides]\nfreeze_language = true\n");
    let path = experiment(dir.path(), &stages, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("threads = 1\n", &format!("threads = 1\n{LORA}"));
    std::fs::write(&path, text).unwrap();
    let exp = Experiment::load(&path).unwrap();
    let err = format!("{:#}", run(&exp, &RunOptions::default()).err().unwrap());
    assert!(
        err.contains("stage \"rl\": overrides")
            && err.contains("grpo.freeze_language with model.lora and model.lora.vision = false"),
        "{err}"
    );
}
