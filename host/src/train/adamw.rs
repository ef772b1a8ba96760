//! AdamW with decoupled weight decay, as torch.optim.AdamW computes it, with
//! its state (moments and step count) exposed so checkpoints can save and
//! restore it exactly: a resumed run must continue bit for bit on CPU.
//!
//! As in torch, a parameter's moments are created the first time it is
//! updated: frozen parameters (no `requires_grad`) never get any, so a stage
//! that trains only part of the model holds optimizer memory for that part.

use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Kind, Tensor};

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates done so far (bias correction uses it; the stage's schedules
    /// are indexed by it, since every stage starts a fresh optimizer).
    pub step: i64,
    /// First and second moments of each parameter updated so far, by its
    /// index in the parameter list `step` is given.
    pub moments: BTreeMap<usize, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(betas: [f64; 2], eps: f64, weight_decay: f64) -> AdamW {
        AdamW {
            beta1: betas[0],
            beta2: betas[1],
            eps,
            weight_decay,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Takes a stage's hyperparameters (its moments and count stay).
    pub fn configure(&mut self, betas: [f64; 2], eps: f64, weight_decay: f64) {
        (self.beta1, self.beta2) = (betas[0], betas[1]);
        self.eps = eps;
        self.weight_decay = weight_decay;
    }

    /// One update, at learning rate `lr`, of every parameter of `params`
    /// (always the same list, in the same order) that requires a gradient
    /// and has one.
    pub fn step(&mut self, params: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, p) in params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() || !p.requires_grad() {
                    continue;
                }
                let (m, v) = self
                    .moments
                    .entry(i)
                    .or_insert_with(|| (p.zeros_like(), p.zeros_like()));
                let mut p = p.shallow_clone();
                // Decoupled weight decay: p <- p * (1 - lr * wd).
                let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                let _ = m
                    .g_mul_scalar_(self.beta1)
                    .g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v
                    .g_mul_scalar_(self.beta2)
                    .g_add_(&(g.square() * (1.0 - self.beta2)));
                let denom = (v.sqrt() / bc2.sqrt()) + self.eps;
                let update = (&*m / &denom) * (lr / bc1);
                let _ = p.g_sub_(&update);
            }
        });
        Ok(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping (what gets logged). `max_norm <= 0` only measures.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = grads
        .iter()
        .map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double))
        .fold(Tensor::from(0f64), |a, b| a + b);
    let norm = total.sqrt().double_value(&[]);
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        tch::no_grad(|| {
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(scale);
            }
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps on f(p) = sum(p^2 * c); reference values from torch.optim.AdamW
    /// (lr 0.1, betas 0.9/0.999, eps 1e-8, weight_decay 0.01), torch 2.13.
    #[test]
    fn matches_torch_adamw() {
        let mut p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).set_requires_grad(true);
        let c = Tensor::from_slice(&[1.0f32, 0.5, 3.0]);
        let params = vec![p.shallow_clone()];
        let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.01);
        for _ in 0..2 {
            p.zero_grad();
            (p.square() * &c).sum(Kind::Float).backward();
            opt.step(&params, 0.1).unwrap();
        }
        let got = Vec::<f32>::try_from(&p.detach()).unwrap();
        let want = [0.798_519_1f32, -1.796_272_6, 0.300_297_9];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// A frozen parameter is not touched and gets no optimizer state; one
    /// that starts training later gets its state then.
    #[test]
    fn state_only_for_what_trains() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut b = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let params = vec![a.shallow_clone(), b.shallow_clone()];
        let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.1);
        let loss =
            |a: &Tensor, b: &Tensor| a.square().sum(Kind::Float) + b.square().sum(Kind::Float);
        loss(&a, &b).backward();
        let _ = b.requires_grad_(false);
        let before = b.copy();
        opt.step(&params, 0.1).unwrap();
        assert!(b.equal(&before), "a frozen parameter moved");
        assert_eq!(opt.moments.keys().copied().collect::<Vec<_>>(), vec![0]);
        let _ = b.requires_grad_(true);
        for p in &params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        loss(&a, &b).backward();
        opt.step(&params, 0.1).unwrap();
        assert_eq!(opt.moments.len(), 2);
        assert!(!b.equal(&before));
    }

    #[test]
    fn clips_to_max_norm() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        (&p * &p * 0.5).sum(Kind::Float).backward(); // grad = p, norm 5
        let norm = clip_grad_norm(&[p.shallow_clone()], 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(&p.grad()).unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }
}
