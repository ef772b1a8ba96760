//! Gradient accumulation over micro-batches, in place: one buffer per
//! trainable parameter whatever the number of micro-batches, so an update's
//! memory does not grow with the rows it trains on.

use tch::{Kind, Tensor};

use super::adamw::narrow;

/// The dtype every gradient sum of `params` is kept in: f32 with
/// `master_weights` and some parameter stored in a narrower float type (the
/// optimizer keeps f32 masters), else `None`: each parameter's own.
pub fn sum_kind(params: &[Tensor], master_weights: bool) -> Option<Kind> {
    (master_weights && params.iter().any(narrow)).then_some(Kind::Float)
}

/// Where an update's micro-batch gradients are summed.
#[derive(Default)]
pub struct GradAccumulator {
    /// One per parameter; undefined until a micro-batch gives it a gradient.
    bufs: Vec<Tensor>,
    /// The parameters (indices) a micro-batch's gradient list is for.
    slots: Vec<usize>,
    /// f32 buffers of their own (the optimizer keeps f32 masters of the
    /// narrower parameters) rather than the parameters' `.grad`.
    f32_buffers: bool,
}

impl GradAccumulator {
    /// An empty sum for `params`, of which micro-batches give gradients for
    /// those at `slots` (the ones that train), in that order. With `master_weights` and parameters
    /// stored in a narrower float type, the sum is kept in f32 buffers of
    /// its own; otherwise it is the parameters' `.grad`, zeroed here (and
    /// created on first use).
    pub fn new(params: &[Tensor], slots: Vec<usize>, master_weights: bool) -> GradAccumulator {
        let f32_buffers = sum_kind(params, master_weights).is_some();
        let bufs = params
            .iter()
            .map(|p| {
                let mut g = p.grad();
                if f32_buffers || !g.defined() {
                    return Tensor::new();
                }
                tch::no_grad(|| {
                    let _ = g.zero_();
                });
                g
            })
            .collect();
        GradAccumulator {
            bufs,
            slots,
            f32_buffers,
        }
    }

    /// Adds one micro-batch's gradients (one per slot; undefined where it
    /// gave none) into the sum, in place.
    pub fn add(&mut self, params: &[Tensor], grads: &[Tensor]) {
        let mut fresh: Vec<(usize, Tensor)> = Vec::new();
        for (k, g) in grads.iter().enumerate().take(self.slots.len()) {
            let i = self.slots[k];
            if !g.defined() {
                continue;
            }
            if self.bufs[i].defined() || self.f32_buffers {
                self.add_one(i, g);
            } else {
                fresh.push((i, g.shallow_clone()));
            }
        }
        if !fresh.is_empty() {
            // A parameter without `.grad` yet gets it from the backward of
            // `sum(p * g)`, which is exactly `g`; later micro-batches add in.
            let total = fresh
                .iter()
                .map(|(i, g)| (&params[*i] * g.detach()).sum(Kind::Float))
                .reduce(|a, b| a + b);
            if let Some(total) = total {
                total.backward();
            }
            for (i, _) in fresh {
                self.bufs[i] = params[i].grad();
            }
        }
    }

    /// Adds parameter `i`'s gradient `g` of one micro-batch (a gradient
    /// hook's: no backward pass may run from here, so a first gradient is
    /// kept as it is instead of becoming the parameter's `.grad`).
    pub fn add_one(&mut self, i: usize, g: &Tensor) {
        let acc = &mut self.bufs[i];
        tch::no_grad(|| {
            if acc.defined() {
                let _ = acc.g_add_(g);
            } else if self.f32_buffers {
                *acc = g.to_kind(Kind::Float);
            } else {
                // Contiguous: the sum is added to in place and reduced as
                // one buffer (a broadcast gradient may come expanded).
                *acc = g.contiguous();
            }
        });
    }

    /// Forgets parameter `i`'s sum (no rank had a gradient for it).
    pub fn unset(&mut self, i: usize) {
        self.bufs[i] = Tensor::new();
    }

    /// The dtype every sum is kept in (`None`: each parameter's own).
    pub fn sum_kind(&self) -> Option<Kind> {
        self.f32_buffers.then_some(Kind::Float)
    }

    /// Gives the parameters at `which`, which got no gradient here, a sum
    /// of zeros (in the type the others are summed in), so that ranks whose
    /// micro-batches did not reach them reduce the same list as the rest.
    pub fn zero_fill(&mut self, params: &[Tensor], which: &[usize]) {
        for &i in which {
            let p = &params[i];
            let kind = if self.f32_buffers {
                Kind::Float
            } else {
                p.kind()
            };
            self.bufs[i] = Tensor::zeros(p.size(), (kind, p.device()));
        }
    }

    /// Bytes the sums hold.
    pub fn held_bytes(&self) -> u64 {
        self.bufs
            .iter()
            .filter(|g| g.defined())
            .map(|g| (g.numel() * g.kind().elt_size_in_bytes()) as u64)
            .sum()
    }

    /// The sums, one per parameter of `params` (undefined where none came).
    pub fn grads(&self) -> &[Tensor] {
        &self.bufs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums land in `.grad` (f32 parameters) or in f32 buffers (bf16
    /// parameters with master weights), and a parameter with no gradient
    /// stays without one.
    #[test]
    fn sums_in_place_in_the_right_type() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let params = [a.shallow_clone(), b.shallow_clone()];
        let mut acc = GradAccumulator::new(&params, vec![0, 1], true);
        acc.add(
            &params,
            &[Tensor::from_slice(&[0.5f32, 1.0]), Tensor::new()],
        );
        acc.add(
            &params,
            &[Tensor::from_slice(&[0.25f32, -1.0]), Tensor::new()],
        );
        assert_eq!(Vec::<f32>::try_from(&a.grad()).unwrap(), vec![0.75, 0.0]);
        assert!(!b.grad().defined() && !acc.grads()[1].defined());
        // A second sum reuses (and zeroes) the same `.grad`.
        let mut again = GradAccumulator::new(&params, vec![0, 1], true);
        again.add(
            &params,
            &[Tensor::from_slice(&[1.0f32, 1.0]), Tensor::new()],
        );
        assert_eq!(Vec::<f32>::try_from(&a.grad()).unwrap(), vec![1.0, 1.0]);

        let h = Tensor::from_slice(&[1.0f32, 2.0])
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let params = [h.shallow_clone()];
        let mut acc = GradAccumulator::new(&params, vec![0], true);
        let tiny = Tensor::from_slice(&[1e-3f32, 1e-3]).to_kind(Kind::BFloat16);
        for _ in 0..3 {
            acc.add(
                &params,
                &[Tensor::from_slice(&[1.0f32, 1.0]).to_kind(Kind::BFloat16)],
            );
            acc.add(&params, &[tiny.shallow_clone()]);
        }
        let sum = &acc.grads()[0];
        assert_eq!(sum.kind(), Kind::Float);
        // In bf16, 1 + 0.001 rounds back to 1; the f32 sum keeps it.
        let got = Vec::<f32>::try_from(sum).unwrap();
        assert!((got[0] - 3.003).abs() < 1e-4, "{got:?}");
        assert!(!h.grad().defined());
    }
}
