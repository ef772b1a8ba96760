//! Rotary position embeddings: plain 1D rope (Qwen2, Qwen3), multimodal M-RoPE
//! with (t, h, w) sections, contiguous (Qwen2.5-VL decoder) or interleaved
//! (Qwen3-VL decoder), and axial 2D rope (vision towers).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// `1 / theta^(2i/dim)` for i in 0..dim/2, float32.
pub fn inv_freq(dim: i64, theta: f64, device: Device) -> Tensor {
    let exps = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)) / dim as f64;
    // Scalar-base pow on a float32 exponent, as transformers computes it, so the
    // frequencies agree to the last bit.
    Tensor::pow_scalar(theta, &exps).reciprocal()
}

/// How M-RoPE assigns the rotary frequencies to the (t, h, w) axes.
#[derive(Debug, Clone, PartialEq)]
pub enum MRope {
    /// Contiguous sections: the first `sections[0]` frequencies follow t, the
    /// next `sections[1]` h, the last `sections[2]` w (Qwen2.5-VL).
    Sections(Vec<i64>),
    /// Interleaved: frequency j follows h when j % 3 == 1 and j < 3 *
    /// sections[1], w when j % 3 == 2 and j < 3 * sections[2], t otherwise
    /// (Qwen3-VL).
    Interleaved(Vec<i64>),
}

/// cos/sin `[B, L, head_dim]` for decoder positions: `[B, L]` (1D rope) or
/// `[3, B, L]` (M-RoPE).
pub fn text_cos_sin(
    positions: &Tensor,
    inv_freq: &Tensor,
    mrope: Option<&MRope>,
    kind: Kind,
) -> Result<(Tensor, Tensor)> {
    let pos = positions.to_kind(Kind::Float);
    let freqs = match (pos.dim(), mrope) {
        (2, _) => pos.unsqueeze(-1) * inv_freq, // [B, L, D/2]
        (3, Some(MRope::Interleaved(sections))) => {
            let f = pos.unsqueeze(-1) * inv_freq; // [3, B, L, D/2]
            let s = f.size();
            let half = s[3];
            let axis: Vec<i64> = (0..half)
                .map(|j| match j % 3 {
                    1 if j < 3 * sections[1] => 1,
                    2 if j < 3 * sections[2] => 2,
                    _ => 0,
                })
                .collect();
            let axis = Tensor::from_slice(&axis)
                .to_device(f.device())
                .view([1, 1, 1, half])
                .expand([1, s[1], s[2], half], false);
            f.gather(0, &axis, false).squeeze_dim(0)
        }
        (3, Some(MRope::Sections(sections))) => {
            let f = pos.unsqueeze(-1) * inv_freq; // [3, B, L, D/2]
            let parts = f.split_with_sizes(sections, -1);
            let picked: Vec<Tensor> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| p.get((i % 3) as i64))
                .collect();
            Tensor::cat(&picked, -1)
        }
        (3, None) => bail!("[3, B, L] position ids need an M-RoPE model (mrope_section)"),
        (d, _) => bail!("position ids must be [B, L] or [3, B, L], got {d} dims"),
    };
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    Ok((emb.cos().to_kind(kind), emb.sin().to_kind(kind)))
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[x.dim() - 1] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// Rotates q, k `[B, H, L, D]` by cos/sin `[B, L, D]`.
pub fn apply_text(q: &Tensor, k: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor) {
    let cos = cos.unsqueeze(1);
    let sin = sin.unsqueeze(1);
    let q2 = q * &cos + rotate_half(q) * &sin;
    let k2 = k * &cos + rotate_half(k) * &sin;
    (q2, k2)
}

/// Vision cos/sin `[N, head_dim]` (float32) from per-patch (h, w) positions `[N, 2]`:
/// the first half of each rotation pair rotates by h, the second by w.
pub fn vision_cos_sin(pos_hw: &Tensor, head_dim: i64, theta: f64) -> (Tensor, Tensor) {
    let inv = inv_freq(head_dim / 2, theta, pos_hw.device());
    let f = pos_hw.to_kind(Kind::Float).unsqueeze(-1) * inv; // [N, 2, D/4]
    let n = f.size()[0];
    let hw = f.reshape([n, -1]); // [N, D/2]: h freqs then w freqs
    let emb = Tensor::cat(&[&hw, &hw], -1);
    (emb.cos(), emb.sin())
}

/// Rotates q, k `[N, H, D]` by vision cos/sin `[N, D]`, computed in float32.
pub fn apply_vision(q: &Tensor, k: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor) {
    let kind = q.kind();
    let cos = cos.unsqueeze(-2);
    let sin = sin.unsqueeze(-2);
    let qf = q.to_kind(Kind::Float);
    let kf = k.to_kind(Kind::Float);
    let q2 = &qf * &cos + rotate_half(&qf) * &sin;
    let k2 = &kf * &cos + rotate_half(&kf) * &sin;
    (q2.to_kind(kind), k2.to_kind(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrope_with_equal_positions_is_1d_rope() {
        // Text tokens carry the same position on all three axes; M-RoPE must then
        // reduce to plain rope whatever the sections.
        let inv = inv_freq(16, 10000.0, Device::Cpu);
        let pos = Tensor::from_slice(&[0i64, 1, 2, 7, 9, 30]).reshape([2, 3]);
        let (c1, s1) = text_cos_sin(&pos, &inv, None, Kind::Float).unwrap();
        let pos3 = pos.unsqueeze(0).expand([3, 2, 3], false);
        let (c3, s3) = text_cos_sin(
            &pos3,
            &inv,
            Some(&MRope::Sections(vec![2, 3, 3])),
            Kind::Float,
        )
        .unwrap();
        assert_eq!(c1.size(), vec![2, 3, 16]);
        assert!(c1.allclose(&c3, 0.0, 0.0, false) && s1.allclose(&s3, 0.0, 0.0, false));
        // Position 1, first frequency is 1 radian.
        let v = c1.double_value(&[0, 1, 0]);
        assert!((v - 1f64.cos()).abs() < 1e-6, "{v}");
    }

    #[test]
    fn vision_rope_rotates_h_then_w() {
        let pos = Tensor::from_slice(&[3i64, 5]).reshape([1, 2]);
        let (c, _) = vision_cos_sin(&pos, 16, 10000.0);
        assert_eq!(c.size(), vec![1, 16]);
        // dims 0..4 use h=3, dims 4..8 use w=5, first frequency 1.
        assert!((c.double_value(&[0, 0]) - 3f64.cos()).abs() < 1e-6);
        assert!((c.double_value(&[0, 4]) - 5f64.cos()).abs() < 1e-6);
        assert!((c.double_value(&[0, 8]) - 3f64.cos()).abs() < 1e-6);
    }

    #[test]
    fn interleaved_mrope_takes_h_and_w_every_third_frequency() {
        let inv = inv_freq(12, 10000.0, Device::Cpu);
        let inv_v = Vec::<f32>::try_from(&inv).unwrap();
        // One token at t = 1, h = 2, w = 3.
        let pos = Tensor::from_slice(&[1i64, 2, 3]).reshape([3, 1, 1]);
        let mrope = MRope::Interleaved(vec![2, 2, 2]);
        let (c, _) = text_cos_sin(&pos, &inv, Some(&mrope), Kind::Float).unwrap();
        for (j, p) in [1.0, 2.0, 3.0, 1.0, 2.0, 3.0].iter().enumerate() {
            let want = (p * f64::from(inv_v[j])).cos();
            let got = c.double_value(&[0, 0, j as i64]);
            assert!((got - want).abs() < 1e-6, "frequency {j}: {got} vs {want}");
            // The second half repeats the first.
            assert_eq!(c.double_value(&[0, 0, 6 + j as i64]), got);
        }
    }
}
