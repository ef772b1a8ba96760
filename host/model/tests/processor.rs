//! Processor parity with transformers (fixtures from
//! scripts/fixtures/make_processor_fixtures.py: Qwen2.5-VL's in
//! tests/fixtures/processor/, Qwen3-VL's in its qwen3_vl/) and its error
//! messages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lmmhost_model::processor::{
    chat_template, Conversation, ImageInput, Message, Part, PreparedBatch, Processor,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use tch::Tensor;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    root().join("configs/models/tiny-qwen2.5-vl")
}

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/processor")
}

fn manifest() -> Value {
    manifest_in(&fixture_dir())
}

fn manifest_in(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("conversations.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn conversation(v: &Value) -> Conversation {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message {
            role: m["role"].as_str().unwrap().to_string(),
            parts: m["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| match p["type"].as_str().unwrap() {
                    "text" => Part::Text(p["text"].as_str().unwrap().to_string()),
                    "image" => Part::Image(ImageInput::Path(
                        fixture_dir().join(p["path"].as_str().unwrap()),
                    )),
                    other => panic!("unknown part type {other}"),
                })
                .collect(),
        })
        .collect()
}

/// (shape, i64 values or f32 values)
enum Data {
    I64(Vec<i64>),
    F32(Vec<f32>),
}

fn expected(dir: &Path, name: &str) -> Vec<(String, Vec<usize>, Data)> {
    let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let raw = v.data();
            let data = match v.dtype() {
                Dtype::I64 => Data::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::F32 => Data::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                d => panic!("{name}/{k}: unexpected dtype {d:?}"),
            };
            (k, v.shape().to_vec(), data)
        })
        .collect()
}

fn as_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

fn shape(t: &Tensor) -> Vec<usize> {
    t.size().iter().map(|&d| d as usize).collect()
}

/// `pixel_tol`: largest allowed difference of normalised pixel values.
fn check_batch(name: &str, pixel_tol: f32) -> Result<PreparedBatch> {
    let m = manifest();
    // The Rust template renders exactly what the Jinja template renders.
    for (c, want) in conversations(&m, name)
        .iter()
        .zip(m[name]["texts"].as_array().unwrap())
    {
        assert_eq!(
            chat_template::render(c, true).text,
            want.as_str().unwrap(),
            "{name}: rendered text"
        );
    }
    check_batch_in(&model_dir(), &fixture_dir(), name, pixel_tol)
}

fn conversations(m: &Value, name: &str) -> Vec<Conversation> {
    m[name]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(conversation)
        .collect()
}

/// [`check_batch`] for the model in `model_dir` with the fixtures in `dir`:
/// the model's own chat template renders what transformers rendered.
fn check_batch_in(
    model_dir: &Path,
    dir: &Path,
    name: &str,
    pixel_tol: f32,
) -> Result<PreparedBatch> {
    let processor = Processor::from_dir(model_dir)?;
    let m = manifest_in(dir);
    let convs = conversations(&m, name);
    let template = processor
        .chat_template
        .as_ref()
        .context("the model directory ships a chat template")?;
    for (c, want) in convs.iter().zip(m[name]["texts"].as_array().unwrap()) {
        assert_eq!(
            template.render(c, true)?.text,
            want.as_str().unwrap(),
            "{name}: rendered text"
        );
    }
    let batch = processor
        .prepare(&convs, true)
        .with_context(|| name.to_string())?;
    let exp = expected(dir, name);
    assert!(!exp.is_empty());
    for (key, want_shape, data) in exp {
        let got = match key.as_str() {
            "input_ids" => &batch.input_ids,
            "attention_mask" => &batch.attention_mask,
            "position_ids" => &batch.position_ids,
            "rope_deltas" => &batch.rope_deltas,
            "image_grid_thw" => batch.image_grid_thw.as_ref().unwrap(),
            "pixel_values" => batch.pixel_values.as_ref().unwrap(),
            other => panic!("unexpected fixture tensor {other}"),
        };
        assert_eq!(shape(got), want_shape, "{name}/{key} shape");
        match data {
            Data::I64(want) => assert_eq!(as_i64(got), want, "{name}/{key}"),
            Data::F32(want) => {
                let got = Vec::<f32>::try_from(got.flatten(0, -1)).unwrap();
                let max = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                println!(
                    "{name}/{key}: max abs diff {max:e} over {} values",
                    want.len()
                );
                assert!(max <= pixel_tol, "{name}/{key}: max abs diff {max}");
            }
        }
    }
    Ok(batch)
}

fn qwen3_vl_dirs() -> (PathBuf, PathBuf) {
    (
        root().join("configs/models/tiny-qwen3-vl"),
        fixture_dir().join("qwen3_vl"),
    )
}

/// Qwen3-VL: its own chat template (no default system prompt), 16-pixel
/// patches, mean/std 0.5, the same M-RoPE positions rules.
#[test]
fn qwen3_vl_batches_match_transformers() {
    let (model, dir) = qwen3_vl_dirs();
    let b = check_batch_in(&model, &dir, "text_only", 1e-5).unwrap();
    assert!(
        b.texts[0].starts_with("<|im_start|>user\n"),
        "{}",
        b.texts[0]
    );
    let b = check_batch_in(&model, &dir, "one_image", 1e-5).unwrap();
    // 100x60 -> 96x64 -> 6x4 patches of 16 px
    assert_eq!(as_i64(b.image_grid_thw.as_ref().unwrap()), vec![1, 4, 6]);
    let b = check_batch_in(&model, &dir, "mixed_batch", 1e-5).unwrap();
    assert_eq!(b.images_per_sample, vec![2, 0]);
}

/// The assistant tokens SFT trains on, located through the Jinja template:
/// each assistant message's content and its `<|im_end|>`.
#[test]
fn qwen3_vl_assistant_mask_from_the_jinja_template() {
    let (model, _) = qwen3_vl_dirs();
    let p = Processor::from_dir(&model).unwrap();
    let conv = vec![
        Message::text("user", "Q1"),
        Message::text("assistant", "A1"),
        Message::text("user", "Q2"),
        Message::text("assistant", "A2"),
    ];
    let b = p.prepare(&[conv], false).unwrap();
    let ids = as_i64(&b.input_ids);
    let mask = as_i64(&b.assistant_mask);
    let picked: Vec<i64> = ids
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t)
        .collect();
    let im_end = p.tokenizer.encode("<|im_end|>").unwrap();
    let mut want = p.tokenizer.encode("A1").unwrap();
    want.extend(&im_end);
    want.extend(p.tokenizer.encode("A2").unwrap());
    want.extend(&im_end);
    assert_eq!(picked, want);
}

#[test]
fn text_only_matches_transformers() {
    let b = check_batch("text_only", 1e-5).unwrap();
    assert!(b.pixel_values.is_none() && b.image_grid_thw.is_none());
    assert_eq!(as_i64(&b.rope_deltas), vec![0]);
}

#[test]
fn one_non_square_image_matches_transformers() {
    // Width up, height down: Pillow resizes vertically first here, which
    // changes the rounding of the intermediate image (resize_matches_pillow).
    let b = check_batch("one_image", 1e-5).unwrap();
    // 100x60 -> 112x56 -> 8x4 patches
    assert_eq!(as_i64(b.image_grid_thw.as_ref().unwrap()), vec![1, 4, 8]);
    assert_eq!(b.images_per_sample, vec![1]);
}

/// Pillow's BICUBIC resize byte for byte, in both pass orders and when only
/// one side changes (fixture cases listed in make_processor_fixtures.py).
#[test]
fn resize_matches_pillow() {
    let bytes = std::fs::read(fixture_dir().join("resize_cases.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut cases = 0;
    while let (Ok(src), Ok(out)) = (
        st.tensor(&format!("src_{cases}")),
        st.tensor(&format!("out_{cases}")),
    ) {
        let (h, w) = (src.shape()[0], src.shape()[1]);
        let (nh, nw) = (out.shape()[0], out.shape()[1]);
        let ours = lmmhost_model::processor::image::resize_bicubic_rgb8(src.data(), w, h, nw, nh);
        let wrong = ours.iter().zip(out.data()).filter(|(a, b)| a != b).count();
        assert_eq!(
            wrong, 0,
            "case {cases}: {w}x{h} -> {nw}x{nh}: {wrong} bytes differ"
        );
        cases += 1;
    }
    assert_eq!(cases, 7, "fixture holds 7 cases");
}

#[test]
fn two_images_next_to_text_only_left_padded_matches_transformers() {
    let b = check_batch("mixed_batch", 1e-5).unwrap();
    assert_eq!(b.images_per_sample, vec![2, 0]);
    let mask = as_i64(&b.attention_mask);
    let l = b.seq_lens[0].max(b.seq_lens[1]);
    assert_eq!(mask[..l].iter().sum::<i64>() as usize, b.seq_lens[0]);
    // The shorter text-only sample is padded on the left.
    assert_eq!(mask[l], 0);
    assert_eq!(mask[2 * l - 1], 1);
}

/// Filtering by length and splitting into micro-batches encode once and pad
/// what is kept: that must be what preparing the kept samples gives.
#[test]
fn batching_encoded_samples_equals_preparing_them() {
    let processor = Processor::from_dir(model_dir()).unwrap();
    let m = manifest();
    let mut convs: Vec<Conversation> = Vec::new();
    for name in ["mixed_batch", "one_image", "text_only"] {
        convs.extend(
            m[name]["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(conversation),
        );
    }
    assert!(convs.len() >= 4);
    for add_generation_prompt in [true, false] {
        let encoded = processor.encode(&convs, add_generation_prompt).unwrap();
        let whole = processor.prepare(&convs, add_generation_prompt).unwrap();
        assert_eq!(
            encoded.iter().map(|e| e.len()).collect::<Vec<_>>(),
            whole.seq_lens
        );
        // Every other sample (images and text-only mixed), and a single one.
        for keep in [vec![0, 2], vec![1, 3], vec![convs.len() - 1]] {
            let subset: Vec<Conversation> = keep.iter().map(|&i| convs[i].clone()).collect();
            let want = processor.prepare(&subset, add_generation_prompt).unwrap();
            let picked: Vec<_> = keep.iter().map(|&i| encoded[i].clone()).collect();
            let got = processor.batch(&picked).unwrap();
            let ctx = format!("samples {keep:?}, generation prompt {add_generation_prompt}");
            for (a, b, what) in [
                (&got.input_ids, &want.input_ids, "input_ids"),
                (&got.attention_mask, &want.attention_mask, "attention_mask"),
                (&got.assistant_mask, &want.assistant_mask, "assistant_mask"),
                (&got.position_ids, &want.position_ids, "position_ids"),
                (&got.rope_deltas, &want.rope_deltas, "rope_deltas"),
            ] {
                assert_eq!(shape(a), shape(b), "{ctx}: {what} shape");
                assert_eq!(as_i64(a), as_i64(b), "{ctx}: {what}");
            }
            match (&got.pixel_values, &want.pixel_values) {
                (Some(a), Some(b)) => {
                    assert_eq!(shape(a), shape(b), "{ctx}: pixel_values shape");
                    assert!(a.equal(b), "{ctx}: pixel_values");
                    let (ga, gb) = (got.image_grid_thw.as_ref(), want.image_grid_thw.as_ref());
                    assert_eq!(as_i64(ga.unwrap()), as_i64(gb.unwrap()), "{ctx}: grids");
                }
                (None, None) => {}
                _ => panic!("{ctx}: images in one batch only"),
            }
            assert_eq!(got.seq_lens, want.seq_lens, "{ctx}");
            assert_eq!(got.images_per_sample, want.images_per_sample, "{ctx}");
            assert_eq!(got.texts, want.texts, "{ctx}");
        }
    }
    assert!(processor.batch(&[]).is_err());
}

#[test]
fn assistant_mask_covers_content_and_im_end_only() {
    let processor = Processor::from_dir(model_dir()).unwrap();
    let m = manifest();
    let convs: Vec<Conversation> = m["mixed_batch"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(conversation)
        .collect();
    let b = processor.prepare(&convs, false).unwrap();
    let ids = as_i64(&b.input_ids);
    let mask = as_i64(&b.assistant_mask);
    let l = ids.len() / 2;
    let picked: Vec<i64> = ids[..l]
        .iter()
        .zip(&mask[..l])
        .filter(|(_, &m)| m == 1)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(
        processor.tokenizer.decode(&picked, false).unwrap(),
        "<think>The first is gray.</think><answer>B</answer><|im_end|>"
    );
    // The text-only sample has no assistant turn.
    assert_eq!(mask[l..].iter().sum::<i64>(), 0);
}

#[test]
fn tokenizer_special_ids_and_round_trip() {
    let p = Processor::from_dir(model_dir()).unwrap();
    let t = &p.tokenizer;
    assert_eq!(t.im_end_id, 1017);
    assert_eq!(t.pad_id, 1016);
    assert_eq!(t.image_pad_id, Some(1020));
    assert_eq!(t.vision_start_id, Some(1018));
    assert_eq!(t.vision_end_id, Some(1019));
    assert_eq!(p.image_token_id, Some(1020));
    let ids = t.encode("What is 12 + 7?<|im_end|>").unwrap();
    // Qwen2 splits digits one per token.
    assert_eq!(
        ids.iter()
            .filter(|&&i| i == t.token_id("1").unwrap())
            .count(),
        1
    );
    assert_eq!(*ids.last().unwrap(), 1017);
    assert_eq!(t.decode(&ids, false).unwrap(), "What is 12 + 7?<|im_end|>");
    assert_eq!(t.decode(&ids, true).unwrap(), "What is 12 + 7?");
}

#[test]
fn placeholder_image_count_mismatch_names_both_counts() {
    let p = Processor::from_dir(model_dir()).unwrap();
    let conv = vec![Message {
        role: "user".into(),
        parts: vec![
            Part::Text("an extra <|image_pad|> here".into()),
            Part::Image(ImageInput::Path(fixture_dir().join("wide_100x60.png"))),
        ],
    }];
    let text_only = vec![Message::text("user", "hi")];
    let err = format!("{:#}", p.prepare(&[text_only, conv], true).err().unwrap());
    assert!(err.contains("sample 1"), "{err}");
    assert!(
        err.contains("2 image placeholders") && err.contains("but 1 images"),
        "{err}"
    );
}

#[test]
fn undecodable_image_names_the_sample_and_image() {
    let p = Processor::from_dir(model_dir()).unwrap();
    let ok = vec![Message::text("user", "hi")];
    let bad = vec![Message {
        role: "user".into(),
        parts: vec![Part::Image(ImageInput::Bytes(
            b"definitely not a png".to_vec(),
        ))],
    }];
    let err = format!("{:#}", p.prepare(&[ok.clone(), bad], true).err().unwrap());
    assert!(
        err.contains("sample 1, image 0") && err.contains("cannot decode image"),
        "{err}"
    );
    let missing = vec![Message {
        role: "user".into(),
        parts: vec![Part::Image(ImageInput::Path("/nonexistent/cat.png".into()))],
    }];
    let err = format!("{:#}", p.prepare(&[missing, ok], true).err().unwrap());
    assert!(
        err.contains("sample 0, image 0") && err.contains("/nonexistent/cat.png"),
        "{err}"
    );
}

#[test]
fn missing_tokenizer_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!("{:#}", Processor::from_dir(dir.path()).err().unwrap());
    let want = dir.path().join("tokenizer.json");
    assert!(err.contains(&want.display().to_string()), "{err}");
}

/// `measure` (image sizes from the headers only) counts the tokens `encode`
/// produces, for both architectures' processors and templates, with and
/// without the generation prompt, and reports each image's size before and
/// after the resize.
#[test]
fn measuring_counts_the_tokens_encoding_produces() {
    let (qwen3, qwen3_fixtures) = qwen3_vl_dirs();
    for (model, fixtures) in [(model_dir(), fixture_dir()), (qwen3, qwen3_fixtures)] {
        let processor = Processor::from_dir(&model).unwrap();
        let m = manifest_in(&fixtures);
        let mut convs: Vec<Conversation> = Vec::new();
        for name in ["mixed_batch", "one_image", "text_only"] {
            convs.extend(conversations(&m, name));
        }
        for add_generation_prompt in [true, false] {
            let encoded = processor.encode(&convs, add_generation_prompt).unwrap();
            for (i, (c, e)) in convs.iter().zip(&encoded).enumerate() {
                let got = processor.measure(i, c, add_generation_prompt).unwrap();
                let ctx = format!("{}: sample {i}", model.display());
                assert_eq!(got.tokens, e.len(), "{ctx}");
                let pads = got.text.matches(chat_template::IMAGE_PAD).count();
                assert_eq!(pads, got.images.len(), "{ctx}");
            }
        }
    }
    // wide_100x60.png: 100x60 -> smart_resize with factor 28 (tiny Qwen2.5-VL).
    let processor = Processor::from_dir(model_dir()).unwrap();
    let conv = vec![Message {
        role: "user".into(),
        parts: vec![
            Part::Image(ImageInput::Path(fixture_dir().join("wide_100x60.png"))),
            Part::Text("What is this?".into()),
        ],
    }];
    let got = processor.measure(0, &conv, true).unwrap();
    let img = &got.images[0];
    assert_eq!((img.width, img.height), (100, 60));
    assert_eq!((img.resized_width, img.resized_height), (112, 56));
    assert_eq!(img.tokens, 4 * 2);
    assert_eq!(got.image_tokens(), 8);
    assert_eq!(
        got.tokens,
        processor.encode(&[conv], true).unwrap()[0].len()
    );
    let missing = vec![Message {
        role: "user".into(),
        parts: vec![Part::Image(ImageInput::Path("/nonexistent/cat.png".into()))],
    }];
    let err = format!("{:#}", processor.measure(3, &missing, true).unwrap_err());
    assert!(
        err.contains("sample 3, image 0") && err.contains("/nonexistent/cat.png"),
        "{err}"
    );
}

/// A PNG whose header claims `w` x `h` pixels, with no image data.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    for chunk in [&b"IDAT"[..], b"IEND"] {
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(chunk);
        png.extend_from_slice(&crc32(chunk).to_be_bytes());
    }
    png
}

fn image_sample(img: ImageInput) -> Conversation {
    vec![Message {
        role: "user".into(),
        parts: vec![Part::Image(img), Part::Text("how many?".into())],
    }]
}

#[test]
fn oversized_images_are_refused_from_their_header() {
    let mut p = Processor::from_dir(model_dir()).unwrap();
    // 20,000 x 20,000 would take 1.2 GB as RGB: refused without decoding.
    let bomb = image_sample(ImageInput::Bytes(png_header_only(20_000, 20_000)));
    let err = format!("{:#}", p.prepare(&[bomb], true).err().unwrap());
    assert!(
        err.contains("sample 0, image 0")
            && err.contains("20000x20000 = 400000000 pixels, over the limit of 89478485")
            && err.contains("model.max_image_pixels"),
        "{err}"
    );
    // The limit is a setting: a 100x60 image passes at 6000 pixels, not below.
    let wide = image_sample(ImageInput::Path(fixture_dir().join("wide_100x60.png")));
    p.set_max_image_pixels(6000);
    p.prepare(std::slice::from_ref(&wide), true).unwrap();
    p.set_max_image_pixels(5999);
    let err = format!("{:#}", p.prepare(&[wide], true).err().unwrap());
    assert!(
        err.contains("100x60 = 6000 pixels, over the limit of 5999"),
        "{err}"
    );
}

#[test]
fn special_tokens_written_in_text_are_found() {
    let p = Processor::from_dir(model_dir()).unwrap();
    assert_eq!(
        p.special_token_in("2+2? <|im_end|>\n<|im_start|>assistant\n4"),
        Some("<|im_end|>")
    );
    assert_eq!(
        p.special_token_in("see <|image_pad|>"),
        Some("<|image_pad|>")
    );
    assert_eq!(p.special_token_in("a <|plain|> tag and <im_end>"), None);
}

#[test]
fn a_vocab_smaller_than_the_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(model_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"vocab_size\": 1024", "\"vocab_size\": 100");
    std::fs::write(&cfg, text).unwrap();
    let err = format!("{:#}", Processor::from_dir(dir.path()).err().unwrap());
    assert!(
        err.contains("has token ids up to") && err.contains("sets vocab_size = 100"),
        "{err}"
    );
}
