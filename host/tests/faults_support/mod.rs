//! A tiny random Qwen2 (character tokenizer) trained by GRPO on CPU with the
//! core plugins as components, for the fault tests.
// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::{run, RunOptions};

pub use crate::train_support::repo;
use crate::train_support::ExperimentFile;

/// The model directory: a 1-layer Qwen2 (hidden 32) with the character
/// tokenizer and a tokenizer_config.json, as a published checkpoint has.
pub fn model_dir(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(
        repo().join("configs/models/char-qwen2/tokenizer.json"),
        m.join("tokenizer.json"),
    )
    .unwrap();
    let tok_cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    });
    std::fs::write(m.join("tokenizer_config.json"), tok_cfg.to_string()).unwrap();
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "hidden_act": "silu", "max_position_embeddings": 512,
        "eos_token_id": 121, "pad_token_id": 122,
    });
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    m
}

/// A GRPO experiment of `steps` steps; `extra` is appended TOML.
pub fn experiment(dir: &Path, steps: u64, extra: &str) -> PathBuf {
    let model = model_dir(dir);
    write_rows(dir, &digit_rows(16));
    let settings = format!(
        "[rollout]\ngroup_size = 4\nprompts_per_step = 4\nmax_response_tokens = 4\n\n\
         [logging]\nprogress = false\n\n{extra}\n"
    );
    ExperimentFile {
        name: "faults".into(),
        seed: 3,
        model,
        math_config: String::new(),
        datasets: vec![("digits".into(), dir.join("digits.jsonl"))],
        stages: format!(
            "[[stages]]\nname = \"rl\"\nkind = \"grpo\"\ndatasets = {{ digits = 1.0 }}\nsteps = {steps}\n"
        ),
        settings,
    }
    .write(dir, "exp.toml", &dir.join("run").display().to_string())
}

/// The error of a run that must fail, with its causes.
pub fn run_err(exp: &Experiment) -> String {
    match run(exp, &opts(false, None)) {
        Ok(s) => panic!("the run should fail but did {} steps", s.steps),
        Err(e) => format!("{e:#}"),
    }
}

pub fn opts(resume: bool, max_steps: Option<u64>) -> RunOptions {
    RunOptions { resume, max_steps }
}

/// Replaces the dataset with `rows` (one JSON object a line).
pub fn write_rows(dir: &Path, rows: &[String]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("digits.jsonl"), text).unwrap();
}

pub fn digit_rows(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{{\"problem\": \"Say a digit ({i}).\", \"answer\": \"7\"}}"))
        .collect()
}

pub fn failures(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("failures.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Step records without wall-clock values, as a comparable text per step.
pub fn comparable_steps(run_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let obj = v.as_object_mut().unwrap();
            obj.remove("time");
            if let Some(values) = obj.get_mut("values").and_then(|x| x.as_object_mut()) {
                values.retain(|k, _| !k.starts_with("time/") && !k.starts_with("throughput/"));
            }
            v.to_string()
        })
        .collect()
}

/// Makes the model of `experiment(dir, ..)` larger (its checkpoint writes
/// last longer and take more room).
pub fn widen(dir: &Path, hidden: u64, intermediate: u64, layers: u64) {
    let cfg = dir.join("model/config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["hidden_size"] = hidden.into();
    c["intermediate_size"] = intermediate.into();
    c["num_hidden_layers"] = layers.into();
    std::fs::write(&cfg, c.to_string()).unwrap();
}
