//! Multimodal training end to end on the tiny Qwen2.5-VL
//! (configs/models/tiny-qwen2.5-vl, random init): SFT on conversations with
//! images (the loss is the assistant tokens' alone), GRPO on a batch that
//! mixes text-only, one-image and two-image prompts, the vision tower or the
//! language model frozen stage by stage (frozen weights bit-identical,
//! optimizer state only for what trains), a resume inside a frozen stage, and
//! the saved model loading in transformers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lmmhost::train::data::sft_conversation;
use lmmhost::train::experiment::Experiment;
use lmmhost::train::plugins::Plugins;
use lmmhost::train::run::{run, RunOptions};
use lmmhost_model::checkpoint;
use lmmhost_model::config::ModelConfig;
use lmmhost_model::lm::ForwardInputs;
use lmmhost_model::processor::Processor;
use tch::{Device, Kind, Tensor};

mod train_support;
use train_support::{
    comparable, loads_in_transformers, repo, steps, stop_and_resume, ExperimentFile,
};

fn model_dir() -> PathBuf {
    repo().join("configs/models/tiny-qwen2.5-vl")
}

const SEED: u64 = 3;
const ANSWERS: [&str; 4] = ["A wide box.", "A tall box.", "Two boxes.", "Grey."];

/// SFT conversations with one or two images (LLaMA-Factory's `messages`
/// layout) and RL prompts without, with one and with two images (EasyR1's
/// layout), each dataset in its own folder with its images.
fn datasets(root: &Path) -> (PathBuf, PathBuf) {
    let fixtures = repo().join("tests/fixtures/processor");
    let (sft, rl) = (root.join("data/sft"), root.join("data/rl"));
    for d in [&sft, &rl] {
        std::fs::create_dir_all(d).unwrap();
        for img in ["wide_100x60.png", "tall_70x150.png", "small_gray_50x30.png"] {
            std::fs::copy(fixtures.join(img), d.join(img)).unwrap();
        }
    }
    let sft_rows = [
        ("<image>What is drawn?", vec!["wide_100x60.png"]),
        ("<image>And here?", vec!["tall_70x150.png"]),
        (
            "<image><image>How many?",
            vec!["wide_100x60.png", "tall_70x150.png"],
        ),
        ("<image>Colour?", vec!["small_gray_50x30.png"]),
    ];
    let mut text = String::new();
    for ((q, images), a) in sft_rows.iter().zip(ANSWERS) {
        let msgs = serde_json::json!([
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
        ]);
        text.push_str(&serde_json::json!({"messages": msgs, "images": images}).to_string());
        text.push('\n');
    }
    std::fs::write(sft.join("sft.jsonl"), text).unwrap();
    let rl_rows = [
        serde_json::json!({"problem": "Say three.", "answer": "3"}),
        serde_json::json!({"problem": "<image>How many boxes?", "answer": "1", "images": ["wide_100x60.png"]}),
        serde_json::json!({"problem": "<image><image>How many boxes?", "answer": "2",
                           "images": ["wide_100x60.png", "small_gray_50x30.png"]}),
    ];
    let text: String = rl_rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(rl.join("rl.jsonl"), text).unwrap();
    (sft, rl)
}

/// One stage per setting: SFT with everything training, SFT with the vision
/// tower frozen, GRPO on the mixed batch with everything training, GRPO with
/// the language model frozen.
const STAGES: &str = r#"
[[stages]]
name = "sft"
kind = "sft"
datasets = { sft = 1.0 }
steps = 1

[[stages]]
name = "sft-frozen-vision"
kind = "sft"
datasets = { sft = 1.0 }
steps = 1
[stages.overrides]
freeze_vision = true

[[stages]]
name = "grpo"
kind = "grpo"
datasets = { rl = 1.0 }
steps = 1

[[stages]]
name = "grpo-frozen-language"
kind = "grpo"
datasets = { rl = 1.0 }
steps = 2
[stages.overrides]
freeze_language = true
"#;

fn experiment(root: &Path, out: &str) -> PathBuf {
    let (sft, rl) = datasets(root);
    let settings = r#"[rollout]
group_size = 2
prompts_per_step = 3
max_prompt_tokens = 256
max_response_tokens = 6
[optim]
lr = 1e-3
weight_decay = 0.0
micro_batch_size = 4
[sft]
batch_size = 4
# Gradients reach every parameter even when the group's rewards agree.
[grpo.entropy]
coef = 0.01
[checkpoint]
every = 1
keep_last = 10
[logging]
tensorboard = false
plots = false
progress = false
"#;
    ExperimentFile {
        name: "multimodal".into(),
        seed: SEED,
        model: model_dir(),
        math_config: r#"{ extract = ["last_number"] }"#.into(),
        datasets: vec![("sft".into(), sft), ("rl".into(), rl)],
        stages: STAGES.into(),
        settings: settings.into(),
    }
    .write(root, &format!("{out}.toml"), out)
}

type Params = BTreeMap<String, Tensor>;

fn params_at(dir: &Path) -> Params {
    let m = checkpoint::load(dir, Device::Cpu, Kind::Float).unwrap();
    m.model.named_parameters().into_iter().collect()
}

fn initial_params() -> Params {
    let config = ModelConfig::from_dir(&model_dir()).unwrap();
    let m = checkpoint::init_random_seeded(
        config,
        Some(&model_dir()),
        Device::Cpu,
        Kind::Float,
        SEED as i64,
    )
    .unwrap();
    m.model.named_parameters().into_iter().collect()
}

/// How many vision and language tensors changed from `a` to `b`.
fn changed(a: &Params, b: &Params) -> (usize, usize) {
    let (mut vision, mut language) = (0, 0);
    for (name, t) in a {
        if !t.equal(&b[name]) {
            if name.starts_with("visual.") {
                vision += 1;
            } else {
                language += 1;
            }
        }
    }
    (vision, language)
}

/// The parameters the checkpoint's optimizer holds moments for.
fn optimizer_state(ckpt: &Path) -> Vec<String> {
    let mut names: Vec<String> = Tensor::read_safetensors(ckpt.join("optimizer.safetensors"))
        .unwrap()
        .into_iter()
        .filter_map(|(k, _)| k.strip_suffix(".exp_avg").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The SFT loss recomputed from the model's full logits: the mean negative
/// log-likelihood of the assistant tokens, which decode to each answer and
/// its end-of-turn token and nothing else.
fn sft_loss_by_hand(exp: &Experiment) -> (f64, usize) {
    let plugins = Plugins::start(exp).unwrap();
    let samples = plugins.datasets["sft"].get_many(&[0, 1, 2, 3]).unwrap();
    let convs: Vec<_> = samples
        .iter()
        .map(|s| sft_conversation(s).unwrap())
        .collect();
    let processor = Processor::from_dir(model_dir()).unwrap();
    let batch = processor
        .batch(&processor.encode(&convs, false).unwrap())
        .unwrap();
    let config = ModelConfig::from_dir(&model_dir()).unwrap();
    let model = checkpoint::init_random_seeded(
        config,
        Some(&model_dir()),
        Device::Cpu,
        Kind::Float,
        SEED as i64,
    )
    .unwrap();
    let inputs = ForwardInputs {
        input_ids: &batch.input_ids,
        attention_mask: &batch.attention_mask,
        position_ids: Some(&batch.position_ids),
        pixel_values: batch.pixel_values.as_ref(),
        image_grid_thw: batch.image_grid_thw.as_ref(),
    };
    assert_eq!(batch.image_grid_thw.as_ref().unwrap().size()[0], 5);
    let logits = tch::no_grad(|| model.model.as_lm().forward(&inputs)).unwrap();
    let l = batch.input_ids.size()[1];
    let logp = logits.narrow(1, 0, l - 1).log_softmax(-1, Kind::Double);
    let targets = batch.input_ids.narrow(1, 1, l - 1);
    let mask = batch.assistant_mask.narrow(1, 1, l - 1);
    let lp = logp
        .gather(-1, &targets.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let tokens = mask.sum(Kind::Int64).int64_value(&[]) as usize;
    let loss = -(lp * mask.to_kind(Kind::Double))
        .sum(Kind::Double)
        .double_value(&[])
        / tokens as f64;
    // Each row's masked targets are its answer and `<|im_end|>`.
    let ids = Vec::<Vec<i64>>::try_from(&targets).unwrap();
    let m = Vec::<Vec<i64>>::try_from(&mask).unwrap();
    let mut answers: Vec<String> = ids
        .iter()
        .zip(&m)
        .map(|(row, mask)| {
            let kept: Vec<i64> = row
                .iter()
                .zip(mask)
                .filter(|(_, &k)| k == 1)
                .map(|(&t, _)| t)
                .collect();
            processor.tokenizer.decode(&kept, false).unwrap()
        })
        .collect();
    answers.sort();
    let mut want: Vec<String> = ANSWERS.iter().map(|a| format!("{a}<|im_end|>")).collect();
    want.sort();
    assert_eq!(answers, want);
    (loss, tokens)
}

#[test]
fn multimodal_sft_and_mixed_grpo_with_frozen_parts_across_stages_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let exp = Experiment::load(&experiment(root, "whole")).unwrap();
    let whole = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(whole.steps, 5);
    let recs = steps(&whole.output_dir);
    for r in &recs {
        let g = r.values["grad_norm"];
        assert!(g.is_finite() && g > 0.0, "step {}: grad_norm {g}", r.step);
    }

    // Step 1: SFT on images; its loss is the assistant tokens' mean NLL.
    let (loss, tokens) = sft_loss_by_hand(&exp);
    let logged = recs[0].values["sft/loss"];
    assert!(
        (logged - loss).abs() < 1e-4,
        "SFT loss {logged}, by hand {loss}"
    );
    assert_eq!(recs[0].values["sft/tokens"], tokens as f64);

    let ckpt = |step: u64| whole.output_dir.join(format!("checkpoints/step-{step:08}"));
    let at = |step: u64| params_at(&ckpt(step).join("model"));
    let (p0, p1, p2, p3, p5) = (initial_params(), at(1), at(2), at(3), at(5));
    let vision_tensors = p0.keys().filter(|k| k.starts_with("visual.")).count();
    let language_tensors = p0.len() - vision_tensors;
    // SFT reaches the vision tower through the images.
    assert_eq!(changed(&p0, &p1), (vision_tensors, language_tensors));
    // Vision frozen: bit-identical; the optimizer holds state for the rest only.
    assert_eq!(changed(&p1, &p2), (0, language_tensors));
    let state = optimizer_state(&ckpt(2));
    assert_eq!(state.len(), language_tensors);
    assert!(state.iter().all(|n| !n.starts_with("visual.")));
    // GRPO on text-only, one-image and two-image prompts at once: both parts train.
    assert_eq!(recs[2].values["samples/generated"], 6.0);
    assert_eq!(changed(&p2, &p3), (vision_tensors, language_tensors));
    // Language frozen for two steps: bit-identical, and only the tower has state.
    assert_eq!(changed(&p3, &p5), (vision_tensors, 0));
    let state = optimizer_state(&ckpt(5));
    assert_eq!(state.len(), vision_tensors);
    assert!(state.iter().all(|n| n.starts_with("visual.")));

    // Stopped inside the frozen stage and resumed: the same steps and weights.
    let exp = Experiment::load(&experiment(root, "resumed")).unwrap();
    let resumed = stop_and_resume(&exp, 4);
    assert_eq!(resumed.steps, 5);
    let again = steps(&resumed.output_dir);
    for (a, b) in recs.iter().zip(&again) {
        assert_eq!(comparable(a), comparable(b), "step {}", a.step);
    }
    assert_eq!(changed(&p5, &params_at(&resumed.final_model)), (0, 0));

    loads_in_transformers(&whole.final_model, "Qwen2_5_VLForConditionalGeneration");
}
