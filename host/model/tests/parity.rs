//! Forward parity with transformers on the fixtures written by
//! scripts/fixtures/make_model_fixtures.py (Qwen2, Qwen2.5-VL) and
//! scripts/fixtures/make_qwen3_fixtures.py (Qwen3, Qwen3-VL) (tiny random
//! models, CPU float32):
//! logits within 1e-4 at every real (non-padding) position, greedy decoding
//! through the KV cache equal to `model.generate(do_sample=False)` token for
//! token, and `token_logprobs` equal to a log-softmax of the full logits.

mod logits_support;

use std::path::PathBuf;

use lmmhost_model::checkpoint::{self, LoadedModel};
use lmmhost_model::lm::{CausalLm, ForwardInputs};
use logits_support::masked_max_diff;
use tch::{Device, Kind, Tensor};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model")
        .join(case)
}

struct Io {
    t: std::collections::HashMap<String, Tensor>,
}

impl Io {
    fn load(case: &str) -> Io {
        let p = fixture(case).join("io.safetensors");
        let t = Tensor::read_safetensors(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Io {
            t: t.into_iter().collect(),
        }
    }
    fn get(&self, k: &str) -> &Tensor {
        &self.t[k]
    }
    fn opt(&self, k: &str) -> Option<&Tensor> {
        self.t.get(k)
    }
    fn inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            input_ids: self.get("input_ids"),
            attention_mask: self.get("attention_mask"),
            position_ids: self.opt("position_ids"),
            pixel_values: self.opt("pixel_values"),
            image_grid_thw: self.opt("image_grid_thw"),
        }
    }
}

fn load_model(case: &str) -> LoadedModel {
    checkpoint::load(&fixture(case).join("checkpoint"), Device::Cpu, Kind::Float)
        .expect("load fixture checkpoint")
}

fn check_logits(model_case: &str, io_case: &str) {
    let lm = load_model(model_case);
    let io = Io::load(io_case);
    let logits = tch::no_grad(|| lm.model.forward(&io.inputs())).expect("forward");
    let expected = io.get("logits");
    assert_eq!(logits.size(), expected.size());
    let d = masked_max_diff(&logits, expected, io.get("attention_mask"));
    println!("{model_case}: max |logits - transformers| = {d:.3e}");
    assert!(
        d < 1e-4,
        "{model_case}: logits differ from transformers by {d}"
    );
}

/// Greedy decoding with prefill + decode_step, finished rows padded, as
/// transformers' generate does; compared with its saved output.
fn check_greedy(model_case: &str, io_case: &str) {
    let lm = load_model(model_case);
    let io = Io::load(io_case);
    let ids = io.get("input_ids");
    let expected = io.get("generated");
    let (b, l) = (ids.size()[0], ids.size()[1]);
    let new = expected.size()[1] - l;
    let eos = Vec::<i64>::try_from(io.get("eos_token_ids")).unwrap();
    let pad = io.get("pad_token_id").int64_value(&[0]);
    assert_eq!(
        lm.model.eos_token_ids(),
        eos.as_slice(),
        "eos ids from config.json + generation_config.json"
    );
    let got = tch::no_grad(|| {
        let (mut logits, mut cache) = lm.model.prefill(&io.inputs()).expect("prefill");
        let mut finished = vec![false; b as usize];
        let mut out = Vec::new();
        for step in 0..new {
            let next: Vec<i64> = Vec::try_from(logits.argmax(-1, false)).unwrap();
            let toks: Vec<i64> = next
                .iter()
                .zip(&finished)
                .map(|(&t, &f)| if f { pad } else { t })
                .collect();
            for (f, t) in finished.iter_mut().zip(&toks) {
                *f = *f || eos.contains(t);
            }
            let t = Tensor::from_slice(&toks).reshape([b, 1]);
            out.push(t.shallow_clone());
            if step + 1 < new {
                logits = lm.model.decode_step(&t, &mut cache).expect("decode step");
            }
        }
        Tensor::cat(&out, 1)
    });
    let want = expected.narrow(1, l, new);
    assert!(
        got.equal(&want),
        "{model_case}: greedy tokens differ\n rust: {:?}\n transformers: {:?}",
        Vec::<i64>::try_from(got.flatten(0, -1)).unwrap(),
        Vec::<i64>::try_from(want.flatten(0, -1)).unwrap()
    );
}

/// token_logprobs == log_softmax(forward) gathered at the targets.
fn check_logprobs(case: &str) {
    let lm = load_model(case);
    let io = Io::load(case);
    let ids = io.get("input_ids");
    // Targets: the next input token (last position: token 1).
    let targets = Tensor::cat(
        &[
            ids.narrow(1, 1, ids.size()[1] - 1),
            ids.narrow(1, 0, 1).ones_like(),
        ],
        1,
    );
    let lp = tch::no_grad(|| lm.model.token_logprobs(&io.inputs(), &targets)).unwrap();
    let want = io
        .get("logits")
        .log_softmax(-1, Kind::Float)
        .gather(-1, &targets.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let m = io.get("attention_mask").ne(0);
    let d = (&lp - &want)
        .abs()
        .masked_fill(&m.logical_not(), 0.0)
        .max()
        .double_value(&[]);
    assert!(
        d < 1e-4,
        "{case}: token_logprobs differ from transformers' log-softmax by {d}"
    );
}

#[test]
fn a_text_qwen2_left_padding() {
    check_logits("a_text_qwen2", "a_text_qwen2");
    check_greedy("a_text_qwen2", "a_text_qwen2");
    check_logprobs("a_text_qwen2");
}

#[test]
fn a_text_qwen2_positions_from_mask() {
    // Without explicit position ids the model derives them from the mask,
    // exactly as the fixture's (generate-style) positions.
    let lm = load_model("a_text_qwen2");
    let io = Io::load("a_text_qwen2");
    let mut inputs = io.inputs();
    inputs.position_ids = None;
    let logits = tch::no_grad(|| lm.model.forward(&inputs)).unwrap();
    let d = masked_max_diff(&logits, io.get("logits"), io.get("attention_mask"));
    assert!(d < 1e-4, "{d}");
}

#[test]
fn b_vl_one_non_square_image() {
    check_logits("b_vl_one_image", "b_vl_one_image");
    check_greedy("b_vl_one_image", "b_vl_one_image");
    check_logprobs("b_vl_one_image");
}

#[test]
fn c_vl_two_images_next_to_text_only_sample() {
    check_logits("b_vl_one_image", "c_vl_two_images");
    check_greedy("b_vl_one_image", "c_vl_two_images");
}

#[test]
fn d_vl_several_windows_and_full_attention_blocks() {
    check_logits("d_vl_windows", "d_vl_windows");
    check_greedy("d_vl_windows", "d_vl_windows");
}

#[test]
fn e_vl_sharded_checkpoint_in_transformers5_key_layout() {
    let lm = load_model("e_vl_sharded_newkeys");
    assert_eq!(lm.source.layout, checkpoint::KeyLayout::Nested);
    assert!(
        lm.source.unused.is_empty(),
        "unused tensors: {:?}",
        lm.source.unused
    );
    check_logits("e_vl_sharded_newkeys", "e_vl_sharded_newkeys");
    check_greedy("e_vl_sharded_newkeys", "e_vl_sharded_newkeys");
}

#[test]
fn f_text_qwen3_left_padding() {
    check_logits("f_text_qwen3", "f_text_qwen3");
    check_greedy("f_text_qwen3", "f_text_qwen3");
    check_logprobs("f_text_qwen3");
    let lm = load_model("f_text_qwen3");
    let io = Io::load("f_text_qwen3");
    let mut inputs = io.inputs();
    inputs.position_ids = None;
    let logits = tch::no_grad(|| lm.model.forward(&inputs)).unwrap();
    let d = masked_max_diff(&logits, io.get("logits"), io.get("attention_mask"));
    assert!(d < 1e-4, "{d}");
}

#[test]
fn g_qwen3_vl_one_non_square_image() {
    check_logits("g_qwen3_vl_one_image", "g_qwen3_vl_one_image");
    check_greedy("g_qwen3_vl_one_image", "g_qwen3_vl_one_image");
    check_logprobs("g_qwen3_vl_one_image");
}

#[test]
fn h_qwen3_vl_two_images_next_to_text_only_sample() {
    check_logits("g_qwen3_vl_one_image", "h_qwen3_vl_two_images");
    check_greedy("g_qwen3_vl_one_image", "h_qwen3_vl_two_images");
}

#[test]
fn i_qwen3_vl_sharded_checkpoint_with_tied_embeddings() {
    let lm = load_model("i_qwen3_vl_sharded_tied");
    assert_eq!(lm.source.layout, checkpoint::KeyLayout::Nested);
    assert!(lm.config.text.tie_word_embeddings);
    assert!(
        lm.source.unused.is_empty(),
        "unused tensors: {:?}",
        lm.source.unused
    );
    check_logits("i_qwen3_vl_sharded_tied", "i_qwen3_vl_sharded_tied");
    check_greedy("i_qwen3_vl_sharded_tied", "i_qwen3_vl_sharded_tied");
}

#[test]
fn image_token_count_mismatch_is_an_error() {
    let lm = load_model("b_vl_one_image");
    let io = Io::load("b_vl_one_image");
    // Drop the last image_pad token (292) by turning it into text.
    let ids = io.get("input_ids").copy();
    let pads: Vec<i64> = Vec::try_from(ids.eq(292).nonzero().select(1, 1)).unwrap();
    let _ = ids.narrow(1, pads[pads.len() - 1], 1).fill_(5);
    let mut inputs = io.inputs();
    inputs.input_ids = &ids;
    let err = tch::no_grad(|| lm.model.forward(&inputs))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("14 <|image_pad|> token(s)") && err.contains("15 merged patches"),
        "{err}"
    );
}

/// bf16 and f16 run the same code as f32 (RMSNorm and softmax in f32, pixel
/// values cast to the model's dtype): on CPU their logits stay within the
/// rounding of the reduced dtype of transformers' f32 logits.
#[test]
fn bf16_and_f16_forward_track_f32() {
    for (model_case, io_case) in [
        ("a_text_qwen2", "a_text_qwen2"),
        ("b_vl_one_image", "c_vl_two_images"),
        ("d_vl_windows", "d_vl_windows"),
        ("f_text_qwen3", "f_text_qwen3"),
        ("g_qwen3_vl_one_image", "h_qwen3_vl_two_images"),
    ] {
        let io = Io::load(io_case);
        let expected = io.get("logits");
        let scale = expected.abs().max().double_value(&[]).max(1.0);
        for kind in [Kind::BFloat16, Kind::Half] {
            let lm = checkpoint::load(&fixture(model_case).join("checkpoint"), Device::Cpu, kind)
                .expect("load fixture checkpoint");
            let logits = tch::no_grad(|| lm.model.forward(&io.inputs())).expect("forward");
            assert_eq!(logits.kind(), kind, "{model_case} {kind:?}: logits dtype");
            let d = masked_max_diff(
                &logits.to_kind(Kind::Float),
                expected,
                io.get("attention_mask"),
            );
            println!("{model_case} {kind:?}: max |logits - f32| = {d:.3e} (scale {scale:.2})");
            // Within 4 units of the dtype's rounding (2^-8 for bf16, 2^-11
            // for f16) of the logit range: measured up to 2.7 and 2.9 units.
            let unit = if kind == Kind::BFloat16 {
                2f64.powi(-8)
            } else {
                2f64.powi(-11)
            };
            assert!(
                d < 4.0 * unit * scale,
                "{model_case} {kind:?}: {d} vs scale {scale}"
            );
        }
    }
}
