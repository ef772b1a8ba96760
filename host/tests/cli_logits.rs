//! `lmmhost logits` on chat prompts end to end: tokenizer, chat template,
//! image preprocessing and the forward pass, checked against the library path
//! (processor + model) on the same checkpoint.

use std::path::{Path, PathBuf};

use lmmhost_model::checkpoint;
use lmmhost_model::lm::CausalLm;
use lmmhost_model::processor::{ImageInput, Message, Part, Processor};
use tch::{Device, Kind, Tensor};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn logits_of_chat_prompts_with_an_image_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("configs/models/tiny-qwen2.5-vl");
    let config = lmmhost_model::config::ModelConfig::from_dir(&src).unwrap();
    let model =
        checkpoint::init_random_seeded(config, Some(&src), Device::Cpu, Kind::Float, 7).unwrap();
    let model_dir = dir.path().join("model");
    checkpoint::save(&model, &model_dir, &Default::default()).unwrap();
    let image = repo().join("tests/fixtures/processor/wide_100x60.png");
    std::fs::copy(&image, dir.path().join("wide.png")).unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            r#"{"messages": [{"role": "user", "content": [{"type": "image", "image": "wide.png"}, {"type": "text", "text": "What is in the picture?"}]}]}"#,
            "\n",
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 3+4."}]}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .arg("logits")
        .arg("--model")
        .arg(&model_dir)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(&out)
        .args(["--greedy-tokens", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("2 prompt(s), vocab 1024"), "{stdout}");

    let got: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    // The same prompts through the library.
    let processor = Processor::from_dir(&model_dir).unwrap();
    let convs = vec![
        vec![Message {
            role: "user".into(),
            parts: vec![
                Part::Image(ImageInput::Path(dir.path().join("wide.png"))),
                Part::Text("What is in the picture?".into()),
            ],
        }],
        vec![
            Message::text("system", "Be brief."),
            Message::text("user", "Compute 3+4."),
        ],
    ];
    let batch = processor.prepare(&convs, true).unwrap();
    assert_eq!(got["input_ids"].size(), batch.input_ids.size());
    assert!(got["input_ids"].equal(&batch.input_ids));
    // 100x60 -> 112x56: 8x4 patches -> 8 merged image tokens.
    let image_tokens = batch
        .input_ids
        .eq(processor.image_token_id.unwrap())
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert_eq!(image_tokens, 8);
    assert!(got["image_grid_thw"].equal(batch.image_grid_thw.as_ref().unwrap()));
    let loaded = checkpoint::load(&model_dir, Device::Cpu, Kind::Float).unwrap();
    let want = loaded.model.forward(&batch.forward_inputs()).unwrap();
    let diff = (&got["logits"] - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "logits differ by {diff}");
    assert_eq!(got["greedy_tokens"].size()[0], 2);
}
