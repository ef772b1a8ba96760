//! What the trainer tests on the tiny char-qwen2 share: the model, the
//! datasets (digits to say, sums to learn) and an experiment file around
//! them with a given schedule.
// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod ranks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lmmhost::metrics::log::{read_records, StepRecord};
use lmmhost::train::experiment::Experiment;
use lmmhost::train::run::{run, RunOptions, RunSummary};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn plugin(name: &str) -> PathBuf {
    let p = repo().join("target/plugins").join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

/// A model directory: a 2-layer Qwen2 (hidden 64) with the character tokenizer.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(
        repo().join("configs/models/char-qwen2/tokenizer.json"),
        m.join("tokenizer.json"),
    )
    .unwrap();
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "hidden_act": "silu", "max_position_embeddings": 1024,
        "eos_token_id": 121, "pad_token_id": 122,
    });
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    m
}

/// Rows asking for a digit; the reference answer is always 7, so the reward
/// (last number in the response equals 7) is sparse for a random model.
pub fn digit_dataset(dir: &Path) -> PathBuf {
    let p = dir.join("digits.jsonl");
    let mut text = String::new();
    for i in 0..32 {
        text.push_str(&format!(
            "{{\"problem\": \"Say a digit ({i}).\", \"answer\": \"7\"}}\n"
        ));
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Worked answers for SFT: "What is a+b?" -> "a+b=c".
pub fn sft_dataset(dir: &Path) -> PathBuf {
    let p = dir.join("sft.jsonl");
    let mut text = String::new();
    for a in 0..6 {
        for b in 0..6 {
            let msgs = serde_json::json!([
                {"role": "user", "content": format!("What is {a}+{b}?")},
                {"role": "assistant", "content": format!("{a}+{b}={}", a + b)},
            ]);
            text.push_str(
                &serde_json::json!({"messages": msgs, "answer": (a + b).to_string()}).to_string(),
            );
            text.push('\n');
        }
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// An experiment file as the trainer tests write it: a random-init model on
/// one CPU thread, the core math reward, JSON Lines datasets, the staged
/// schedule read from `schedule.toml` beside the file, then the test's own
/// sections.
pub struct ExperimentFile {
    pub name: String,
    pub seed: u64,
    pub model: PathBuf,
    /// The math reward's inline config table (`{ extract = [...] }`), or empty.
    pub math_config: String,
    pub datasets: Vec<(String, PathBuf)>,
    /// The schedule's `[[stages]]`.
    pub stages: String,
    /// Further TOML: `[rollout]`, `[optim]`, ...
    pub settings: String,
}

impl ExperimentFile {
    /// Writes `dir/schedule.toml` and `dir/<file>`, the run going to `output_dir`.
    pub fn write(&self, dir: &Path, file: &str, output_dir: &str) -> PathBuf {
        let mut text = format!(
            "name = \"{name}\"\nseed = {seed}\noutput_dir = \"{output_dir}\"\n\n\
             [model]\npath = \"{model}\"\ninit = \"random\"\nthreads = 1\n\n\
             [plugins.math]\nwasm = \"{math}\"\n",
            name = self.name,
            seed = self.seed,
            model = self.model.display(),
            math = plugin("reward-math").display(),
        );
        if !self.math_config.is_empty() {
            text.push_str(&format!("config = {}\n", self.math_config));
        }
        text.push_str(&format!(
            "\n[plugins.jsonl]\nwasm = \"{}\"\n\n[plugins.staged]\nwasm = \"{}\"\n\n\
             [[rewards]]\nplugin = \"math\"\n\n",
            plugin("loader-jsonl").display(),
            plugin("schedule-staged").display(),
        ));
        for (name, path) in &self.datasets {
            text.push_str(&format!(
                "[datasets.{name}]\nloader = \"jsonl\"\nfiles = [\"{}\"]\n\n",
                path.display()
            ));
        }
        text.push_str("[schedule]\nplugin = \"staged\"\nfile = \"schedule.toml\"\n\n");
        text.push_str(&self.settings);
        std::fs::write(dir.join("schedule.toml"), &self.stages).unwrap();
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Writes an experiment file with the given schedule stages and extra TOML.
pub fn experiment(dir: &Path, stages: &str, extra: &str) -> PathBuf {
    let model = tiny_model(dir);
    let digits = digit_dataset(dir);
    let sft = sft_dataset(dir);
    let settings = format!(
        r#"[rollout]
group_size = 8
prompts_per_step = 8
max_response_tokens = 6
temperature = 1.0

[optim]
lr = 3e-3
weight_decay = 0.0
micro_batch_size = 32

[logging]
tensorboard = true
plots = true
progress = false

{extra}
"#
    );
    ExperimentFile {
        name: "toy".into(),
        seed: 5,
        model,
        math_config: r#"{ extract = ["last_number"] }"#.into(),
        datasets: vec![("digits".into(), digits), ("sft".into(), sft)],
        stages: stages.into(),
        settings,
    }
    .write(dir, "exp.toml", &dir.join("run").display().to_string())
}

pub fn steps(run_dir: &Path) -> Vec<StepRecord> {
    read_records(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.kind != "eval")
        .collect()
}

/// Runs `exp` until it stops at `stop_at` steps (which writes a checkpoint),
/// then resumes it to the end; the resumed run's summary.
pub fn stop_and_resume(exp: &Experiment, stop_at: u64) -> RunSummary {
    let stop = RunOptions {
        resume: false,
        max_steps: Some(stop_at),
    };
    assert_eq!(run(exp, &stop).unwrap().steps, stop_at);
    let resume = RunOptions {
        resume: true,
        max_steps: None,
    };
    run(exp, &resume).unwrap()
}

pub fn mean(records: &[StepRecord], key: &str) -> f64 {
    let v: Vec<f64> = records.iter().map(|r| r.values[key]).collect();
    v.iter().sum::<f64>() / v.len() as f64
}

pub const GRPO_ONLY: &str = r#"
[[stages]]
name = "rl"
kind = "grpo"
datasets = { digits = 1.0 }
steps = 16
"#;

pub fn comparable(r: &StepRecord) -> BTreeMap<String, f64> {
    r.values
        .iter()
        .filter(|(k, _)| !k.starts_with("time/") && !k.starts_with("throughput/"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// transformers' `from_pretrained` (the fixture venv's) reads the model at
/// `model` as `class` with every key used.
pub fn loads_in_transformers(model: &Path, class: &str) {
    let python = repo().join(".venv-fixtures/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs transformers)",
        python.display()
    );
    let check = "import sys, transformers\n\
        m, info = getattr(transformers, sys.argv[1]).from_pretrained(sys.argv[2], output_loading_info=True)\n\
        bad = info['missing_keys'] or info['unexpected_keys']\n\
        print('loaded', type(m).__name__, bad)\n\
        sys.exit(1 if bad else 0)";
    let out = std::process::Command::new(&python)
        .args(["-c", check, class])
        .arg(model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
