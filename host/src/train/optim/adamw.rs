//! AdamW with decoupled weight decay, as torch.optim.AdamW computes it, with
//! its state (moments and step count) exposed so checkpoints can save and
//! restore it exactly: a resumed run must continue bit for bit on CPU.
//!
//! As in torch, a parameter's moments are created the first time it is
//! updated: frozen parameters (no `requires_grad`) never get any, so a stage
//! that trains only part of the model holds optimizer memory for that part.
//!
//! With `master_weights` (mixed precision, `model.dtype = "bf16"`), a
//! parameter held in bf16/f16 is updated through an f32 master copy with f32
//! moments, and the model's tensor receives the master rounded after each
//! step: Adam's steps of about `lr` per weight are far below bf16's
//! resolution (2^-8 relative), so without the master they would round away.

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use lmmhost_distributed::ShardPlan;
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
    /// Keep an f32 master copy (and f32 moments) of every parameter stored
    /// in a narrower float type.
    pub master_weights: bool,
    /// The f32 masters, by parameter index, created with the moments.
    pub masters: BTreeMap<usize, Tensor>,
    /// ZeRO stage (`distributed.zero_stage`): 0 keeps the whole state in
    /// `moments` and `masters` on every rank; 1 and 2 keep this rank's
    /// shards in `zero` instead (see `zero.rs`).
    pub zero_stage: u8,
    /// This rank's shards of the state, from the first sharded update on.
    pub zero: Option<ZeroShards>,
    /// Bytes this rank's sum of the last update's gradients held (whole, or
    /// its shards under ZeRO-2); not state, reported beside it.
    pub grad_sum_bytes: u64,
    /// The last update's share of the gradient all-reduce (bytes) that
    /// started during the backward pass; `None` when not overlapped.
    pub grad_reduce_overlap: Option<f64>,
}

/// Whether `t` is stored in a float type narrower than the f32 masters
/// (bf16, f16): under mixed precision the optimizer keeps a master of it.
pub(super) fn narrow(t: &Tensor) -> bool {
    t.kind() != Kind::Float && t.kind() != Kind::Double
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
            master_weights: false,
            masters: BTreeMap::new(),
            zero_stage: 0,
            zero: None,
            grad_sum_bytes: 0,
            grad_reduce_overlap: None,
        }
    }

    /// The optimizer of a model stored in `kind` with `master_weights`.
    pub fn with_master_weights(mut self, master_weights: bool) -> AdamW {
        self.master_weights = master_weights;
        self
    }

    /// The optimizer with its state sharded as ZeRO `stage` does it (on
    /// several ranks; a world of one keeps the whole state).
    pub fn with_zero_stage(mut self, stage: u8) -> AdamW {
        self.zero_stage = stage;
        self
    }

    /// The weights the optimizer trains: the f32 master where there is
    /// one, else the parameter itself.
    pub fn trained_weight(&self, index: usize, param: &Tensor) -> Tensor {
        match self.masters.get(&index) {
            Some(m) => m.shallow_clone(),
            None => param.shallow_clone(),
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
    /// and has one in `grads` (same order; undefined for none).
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor], lr: f64) -> Result<()> {
        ensure!(
            params.len() == grads.len(),
            "one gradient slot per parameter"
        );
        let bias = self.count_step();
        tch::no_grad(|| {
            for (i, (p, g)) in params.iter().zip(grads).enumerate() {
                if !g.defined() || !p.requires_grad() {
                    continue;
                }
                if self.master_weights && narrow(p) && !self.masters.contains_key(&i) {
                    self.masters.insert(i, p.to_kind(Kind::Float));
                }
                let master = self.masters.get(&i).map(Tensor::shallow_clone);
                // The tensor the arithmetic runs on: the master, or the parameter.
                let w = master.as_ref().unwrap_or(p).shallow_clone();
                let (m, v) = self
                    .moments
                    .entry(i)
                    .or_insert_with(|| (w.zeros_like(), w.zeros_like()));
                let (m, v) = (m.shallow_clone(), v.shallow_clone());
                self.update(&w, g, &m, &v, lr, bias);
                if master.is_some() {
                    let mut p = p.shallow_clone();
                    p.copy_(&w);
                }
            }
        });
        Ok(())
    }

    /// Counts an update and returns its bias corrections `1 - beta^step`.
    pub(super) fn count_step(&mut self) -> (f64, f64) {
        self.step += 1;
        (
            1.0 - self.beta1.powi(self.step as i32),
            1.0 - self.beta2.powi(self.step as i32),
        )
    }

    /// The AdamW update of `w` and its moments `m`, `v` in place, with
    /// gradient `g` (cast to `w`'s type): the one place of the arithmetic,
    /// for whole parameters and for ZeRO's flat shards alike.
    pub(super) fn update(
        &self,
        w: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
        lr: f64,
        (bc1, bc2): (f64, f64),
    ) {
        let (mut w, mut m, mut v) = (w.shallow_clone(), m.shallow_clone(), v.shallow_clone());
        let g = if g.kind() == w.kind() {
            g.shallow_clone()
        } else {
            g.to_kind(w.kind())
        };
        // Decoupled weight decay: p <- p * (1 - lr * wd).
        let _ = w.g_mul_scalar_(1.0 - lr * self.weight_decay);
        let _ = m
            .g_mul_scalar_(self.beta1)
            .g_add_(&(&g * (1.0 - self.beta1)));
        let _ = v
            .g_mul_scalar_(self.beta2)
            .g_add_(&(g.square() * (1.0 - self.beta2)));
        let denom = (v.sqrt() / bc2.sqrt()) + self.eps;
        let update = (&m / &denom) * (lr / bc1);
        let _ = w.g_sub_(&update);
    }

    /// Bytes of optimizer state this process holds: moments and f32 masters
    /// (only its shards of them under ZeRO).
    pub fn state_bytes(&self) -> u64 {
        let whole: u64 = self
            .moments
            .values()
            .map(|(m, v)| tensor_bytes(m) + tensor_bytes(v))
            .chain(self.masters.values().map(tensor_bytes))
            .sum();
        whole + self.zero.as_ref().map_or(0, |z| z.state_bytes())
    }
}

/// This rank's shards of the optimizer state under ZeRO (`zero.rs` makes
/// and updates them).
pub struct ZeroShards {
    pub(super) plan: ShardPlan,
    /// The parameters the plan covers (those that train), by index.
    pub(super) indices: Vec<usize>,
    /// Per bucket, the f32 master shard (mixed precision); without masters
    /// the shard of the weights is taken from the parameters each update.
    pub(super) masters: Option<Vec<Tensor>>,
    /// Per bucket, the first and second moments; empty before the first
    /// update.
    pub(super) moments: Vec<(Tensor, Tensor)>,
}

impl ZeroShards {
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    pub fn state_bytes(&self) -> u64 {
        let masters: u64 = self.masters.iter().flatten().map(tensor_bytes).sum();
        let moments: u64 = self
            .moments
            .iter()
            .map(|(m, v)| tensor_bytes(m) + tensor_bytes(v))
            .sum();
        masters + moments
    }
}

/// Bytes of `t`'s elements.
fn tensor_bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// The parameters' own `.grad` (undefined where there is none).
pub fn param_grads(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(Tensor::grad).collect()
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping (what gets logged). `max_norm <= 0` only measures.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> f64 {
    let norm = squared_norm(grads).sqrt();
    clip_to_norm(grads, norm, max_norm);
    norm
}

/// The sum of the squares of the (defined) `grads`, in f64.
pub fn squared_norm(grads: &[Tensor]) -> f64 {
    grads
        .iter()
        .filter(|g| g.defined())
        .map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double))
        .fold(Tensor::from(0f64), |a, b| a + b)
        .double_value(&[])
}

/// Scales `grads`, whose global L2 norm (over every rank's shards under
/// ZeRO) is `norm`, to at most `max_norm` (`<= 0`: no clipping).
pub fn clip_to_norm(grads: &[Tensor], norm: f64, max_norm: f64) {
    let grads: Vec<&Tensor> = grads.iter().filter(|g| g.defined()).collect();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        tch::no_grad(|| {
            for g in grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(scale);
            }
        });
    }
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
            opt.step(&params, &param_grads(&params), 0.1).unwrap();
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
        opt.step(&params, &param_grads(&params), 0.1).unwrap();
        assert!(b.equal(&before), "a frozen parameter moved");
        assert_eq!(opt.moments.keys().copied().collect::<Vec<_>>(), vec![0]);
        let _ = b.requires_grad_(true);
        for p in &params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        loss(&a, &b).backward();
        opt.step(&params, &param_grads(&params), 0.1).unwrap();
        assert_eq!(opt.moments.len(), 2);
        assert!(!b.equal(&before));
    }

    #[test]
    fn clips_to_max_norm() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        (&p * &p * 0.5).sum(Kind::Float).backward(); // grad = p, norm 5
        let norm = clip_grad_norm(&[p.grad()], 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(&p.grad()).unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }
}
