//! Forward parity of this build on any device and dtype against the shipped
//! fixtures (tests/fixtures/model: tiny random checkpoints with inputs and
//! transformers' CPU float32 logits): the check a new machine runs before
//! its figures are trusted.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::lm::{CausalLm, ForwardInputs};

/// (checkpoint, inputs) pairs: each model on its own inputs, and the
/// vision-language ones also on two images.
pub const CASES: [(&str, &str); 9] = [
    ("a_text_qwen2", "a_text_qwen2"),
    ("b_vl_one_image", "b_vl_one_image"),
    ("b_vl_one_image", "c_vl_two_images"),
    ("d_vl_windows", "d_vl_windows"),
    ("e_vl_sharded_newkeys", "e_vl_sharded_newkeys"),
    ("f_text_qwen3", "f_text_qwen3"),
    ("g_qwen3_vl_one_image", "g_qwen3_vl_one_image"),
    ("g_qwen3_vl_one_image", "h_qwen3_vl_two_images"),
    ("i_qwen3_vl_sharded_tied", "i_qwen3_vl_sharded_tied"),
];

/// The allowed max |logits - reference| for `kind`: 1e-4 in float32; in
/// bf16/f16 6 units of the dtype's rounding (2^-8, 2^-11) of the logit range.
/// On CPU the nine cases measure up to 4.2 bf16 units (Qwen3-VL on its own
/// one-image inputs; the five cases of host/model/tests/parity.rs stay under
/// its 4); a GPU's kernels round differently, hence the margin.
pub fn bound(kind: Kind, scale: f64) -> f64 {
    match kind {
        Kind::BFloat16 => 6.0 * 2f64.powi(-8) * scale,
        Kind::Half => 6.0 * 2f64.powi(-11) * scale,
        _ => 1e-4,
    }
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub model: String,
    pub inputs: String,
    pub max_diff: f64,
    pub bound: f64,
}

impl CaseResult {
    pub fn ok(&self) -> bool {
        self.max_diff.is_finite() && self.max_diff < self.bound
    }
}

/// Runs every case of `fixtures` on `device` in `kind`.
pub fn run(fixtures: &Path, device: Device, kind: Kind) -> Result<Vec<CaseResult>> {
    let mut out = Vec::new();
    for (model_case, io_case) in CASES {
        let ckpt = fixtures.join(model_case).join("checkpoint");
        let io_path = fixtures.join(io_case).join("io.safetensors");
        if !ckpt.is_dir() || !io_path.is_file() {
            bail!(
                "fixture {model_case}/{io_case} missing under {} (expected {} and {})",
                fixtures.display(),
                ckpt.display(),
                io_path.display()
            );
        }
        let io: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&io_path)
            .with_context(|| format!("cannot read {}", io_path.display()))?
            .into_iter()
            .collect();
        let get = |k: &str| -> Result<Tensor> {
            io.get(k)
                .map(|t| t.to_device(device))
                .with_context(|| format!("{}: no tensor {k:?}", io_path.display()))
        };
        let opt = |k: &str| io.get(k).map(|t| t.to_device(device));
        let (ids, mask, expected) = (get("input_ids")?, get("attention_mask")?, get("logits")?);
        let pixels = opt("pixel_values").map(|p| p.to_kind(kind));
        let (positions, grid) = (opt("position_ids"), opt("image_grid_thw"));
        let lm = checkpoint::load(&ckpt, device, kind)
            .with_context(|| format!("fixture checkpoint {}", ckpt.display()))?;
        let inputs = ForwardInputs {
            input_ids: &ids,
            attention_mask: &mask,
            position_ids: positions.as_ref(),
            pixel_values: pixels.as_ref(),
            image_grid_thw: grid.as_ref(),
        };
        let logits = tch::no_grad(|| lm.model.forward(&inputs))
            .with_context(|| format!("forward of {model_case} on {io_case}"))?;
        let m = mask.ne(0).unsqueeze(-1);
        let max_diff = (logits.to_kind(Kind::Float) - &expected)
            .abs()
            .masked_fill(&m.logical_not(), 0.0)
            .max()
            .double_value(&[]);
        let scale = expected.abs().max().double_value(&[]).max(1.0);
        out.push(CaseResult {
            model: model_case.into(),
            inputs: io_case.into(),
            max_diff,
            bound: bound(kind, scale),
        });
    }
    Ok(out)
}
