//! Logit comparisons the parity and LoRA tests share.

use tch::Tensor;

/// Largest |a - b| over positions where `mask` is 1 (`a`, `b`: [B, L, V]).
pub fn masked_max_diff(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.ne(0).unsqueeze(-1);
    (a - b)
        .abs()
        .masked_fill(&m.logical_not(), 0.0)
        .max()
        .double_value(&[])
}
