//! LoRA adapters against PEFT: the adapter directory lmmhost writes loads
//! with `PeftModel.from_pretrained` onto the base checkpoint and reproduces
//! lmmhost's logits, and so does the merged checkpoint in transformers
//! (scripts/fixtures/check_lora.py, in the fixture venv); zero-initialised
//! adapters leave the base model's logits exactly as they were.

mod logits_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmmhost_model::checkpoint::{self, LoadOptions, LoadedModel, SaveOptions};
use lmmhost_model::lm::{CausalLm, ForwardInputs};
use lmmhost_model::lora::{self, LoraConfig, LANGUAGE_TARGETS};
use lmmhost_model::peft_adapter;
use logits_support::masked_max_diff;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(case: &str) -> PathBuf {
    root().join("tests/fixtures/model").join(case)
}

fn config(vision: bool) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: LANGUAGE_TARGETS.iter().map(|s| s.to_string()).collect(),
        vision,
        rslora: false,
    }
}

fn load(case: &str, lora: Option<LoraConfig>) -> LoadedModel {
    let opts = LoadOptions {
        lora,
        ..Default::default()
    };
    checkpoint::load_with(
        &fixture(case).join("checkpoint"),
        Device::Cpu,
        Kind::Float,
        opts,
    )
    .unwrap()
}

fn io(case: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(case).join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn logits(m: &LoadedModel, io: &HashMap<String, Tensor>) -> Tensor {
    let inputs = ForwardInputs {
        input_ids: &io["input_ids"],
        attention_mask: &io["attention_mask"],
        position_ids: io.get("position_ids"),
        pixel_values: io.get("pixel_values"),
        image_grid_thw: io.get("image_grid_thw"),
    };
    tch::no_grad(|| m.model.forward(&inputs)).unwrap()
}

/// Gives every `lora_B` random values (a fresh adapter's are zero, which
/// would test nothing).
fn randomize_b(m: &LoadedModel) {
    checkpoint::seeded(3, || {
        let _g = tch::no_grad_guard();
        for (name, t) in m.model.named_parameters() {
            if name.ends_with(".lora_B.weight") {
                t.shallow_clone().copy_(&(t.randn_like() * 0.05));
            }
        }
    });
}

#[test]
fn zero_initialised_adapters_reproduce_the_base_model_exactly() {
    for (case, vision) in [("a_text_qwen2", false), ("b_vl_one_image", true)] {
        let io = io(case);
        let base = logits(&load(case, None), &io);
        let m = load(case, Some(config(vision)));
        let params = m.model.named_parameters();
        lora::init_adapters(&params, 7);
        let a: Vec<&Tensor> = params
            .iter()
            .filter(|(n, _)| n.ends_with(".lora_A.weight"))
            .map(|(_, t)| t)
            .collect();
        // A drawn from U(-1/sqrt(in), 1/sqrt(in)), B zero.
        assert!(a
            .iter()
            .all(|t| t.abs().max().double_value(&[]) <= 1.0 / (t.size()[1] as f64).sqrt()));
        assert!(a
            .iter()
            .all(|t| t.abs().sum(Kind::Float).double_value(&[]) > 0.0));
        assert!(logits(&m, &io).equal(&base), "{case}");
    }
}

#[test]
fn adapters_target_the_named_projections_and_the_vision_blocks_on_request() {
    let names = |vision| {
        load("b_vl_one_image", Some(config(vision)))
            .model
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| lora::is_adapter(n))
            .collect::<Vec<_>>()
    };
    let text_only = names(false);
    assert!(text_only.iter().all(|n| n.starts_with("model.layers.")));
    assert!(text_only.contains(&"model.layers.0.mlp.gate_proj.lora_B.weight".to_string()));
    let with_vision = names(true);
    assert!(with_vision.contains(&"visual.blocks.0.attn.qkv.lora_A.weight".to_string()));
    assert!(with_vision.contains(&"visual.blocks.0.mlp.down_proj.lora_A.weight".to_string()));
    assert!(!with_vision.iter().any(|n| n.starts_with("visual.merger")));

    let bad = LoraConfig {
        rank: 0,
        alpha: 0.0,
        dropout: 1.0,
        targets: vec!["qproj".into()],
        ..config(false)
    };
    let p = bad.problems("model.lora").join("\n");
    for want in [
        "model.lora.rank = 0: must be >= 1",
        "model.lora.alpha = 0: must be > 0",
        "model.lora.dropout = 1: must be in [0, 1)",
        "model.lora.targets: unknown target \"qproj\"; expected some of q_proj, k_proj",
    ] {
        assert!(p.contains(want), "{p}");
    }
}

/// Dropout acts on the adapter's input only when autograd records (the
/// update), so rollouts and log-prob passes are deterministic.
#[test]
fn adapter_dropout_acts_in_training_forwards_only() {
    let c = LoraConfig {
        dropout: 0.5,
        ..config(false)
    };
    let x = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
    let mut ad = lora::LoraAdapter::new(&c, 8, 16, &x, &Default::default());
    ad.a = Tensor::randn([4, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    ad.b = Tensor::randn([8, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let plain = x
        .linear(&ad.a, None::<&Tensor>)
        .linear(&ad.b, None::<&Tensor>)
        * 2.0;
    let eval = tch::no_grad(|| ad.forward(&x));
    assert!(eval.allclose(&plain.detach(), 1e-6, 1e-6, false));
    let train = ad.forward(&x);
    assert!(!train.detach().allclose(&plain.detach(), 1e-3, 1e-3, false));
}

/// The round trip through PEFT for Qwen2 (text), Qwen2.5-VL with vision
/// adapters and Qwen3-VL without (its vision MLP names must stay unmatched).
#[test]
fn peft_loads_the_saved_adapters_and_reproduces_the_logits() {
    let python = root().join(".venv-fixtures/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the fixture venv with PEFT)",
        python.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root().join("scripts/fixtures/check_lora.py"));
    let cases = [
        ("a_text_qwen2", false),
        ("b_vl_one_image", true),
        ("g_qwen3_vl_one_image", false),
    ];
    for (case, vision) in cases {
        let io = io(case);
        let base = logits(&load(case, None), &io);
        let c = config(vision);
        let m = load(case, Some(c.clone()));
        lora::init_adapters(&m.model.named_parameters(), 1);
        randomize_b(&m);
        let ours = logits(&m, &io);
        let moved = masked_max_diff(&ours, &base, &io["attention_mask"]);
        assert!(
            moved > 1e-3,
            "{case}: the adapters changed nothing ({moved})"
        );
        // With the adapters off it is the base model, exactly (the KL reference).
        let off = m.adapters.without_adapters(|| logits(&m, &io));
        assert!(off.equal(&base), "{case}: adapters off is not the base");
        assert!(m.adapters.is_on());
        let dir = tmp.path().join(case);
        let ckpt = fixture(case).join("checkpoint");
        peft_adapter::save_adapter(&m, &c, &ckpt.display().to_string(), &dir.join("adapter"))
            .unwrap();
        // In f32: the Qwen3-VL fixture is stored in bf16, which would round
        // the merged weights.
        let f32 = SaveOptions {
            dtype: Some(Kind::Float),
            ..Default::default()
        };
        peft_adapter::save_merged(&m, &c, &dir.join("merged"), &f32).unwrap();
        Tensor::write_safetensors(&[("logits", &ours)], dir.join("logits.safetensors")).unwrap();
        let spec = serde_json::json!({
            "base": ckpt,
            "io": fixture(case).join("io.safetensors"),
        });
        std::fs::write(dir.join("case.json"), spec.to_string()).unwrap();
        check_adapter_config(&dir.join("adapter"), vision);
        // The adapters read back equal what was saved.
        let back = load(case, Some(c.clone()));
        peft_adapter::load_adapter(&back, &c, &dir.join("adapter")).unwrap();
        assert!(
            logits(&back, &io).equal(&ours),
            "{case}: reloaded adapters differ"
        );
        cmd.arg(&dir);
    }
    let o = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ok: Vec<&str> = text.lines().filter(|l| l.ends_with("lora OK")).collect();
    eprintln!("{}", ok.join("\n"));
    assert!(o.status.success(), "PEFT check failed:\n{text}");
    assert_eq!(ok.len(), cases.len(), "{text}");
}

fn check_adapter_config(dir: &Path, vision: bool) {
    let text = std::fs::read_to_string(dir.join(peft_adapter::ADAPTER_CONFIG)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["peft_type"], "LORA");
    assert_eq!(v["r"], 4);
    assert_eq!(v["lora_alpha"], 8.0);
    let targets = v["target_modules"].as_str().unwrap();
    assert_eq!(targets.contains("visual"), vision, "{targets}");
}
