//! ZeRO stage 2's gradient accumulation: each micro-batch's gradients are
//! reduce-scattered over the ranks as soon as its backward ends and added
//! into this rank's shards of the sum (one per bucket of the optimizer
//! state's `ShardPlan`), then dropped. No rank holds the whole sum: its
//! memory is the model's gradient size over the world size, paid for with a
//! reduce-scatter per micro-batch instead of one per update (as DeepSpeed's
//! ZeRO-2 accumulates).

use anyhow::{ensure, Context, Result};
use lmmhost_distributed::{Distributed, ReduceOp, ShardPlan};
use tch::Tensor;

/// This rank's shards of the sum over ranks and micro-batches of an
/// update's gradients.
pub struct ShardedGradSum {
    /// Per bucket of the plan, in the sum's dtype.
    shards: Vec<Tensor>,
    /// Per trained parameter (the plan's tensors, in order): whether one of
    /// this rank's micro-batches gave it a gradient.
    got: Vec<bool>,
    /// The reduce-scatters every rank runs for the update (the most
    /// micro-batches of any rank), and those run so far.
    rounds: usize,
    done: usize,
}

impl ShardedGradSum {
    /// A sum of zeros laid out as `plan` (the optimizer state's), for
    /// `rounds` reduce-scatters: the most micro-batches any rank runs.
    pub fn new(plan: &ShardPlan, trained: usize, rounds: usize) -> ShardedGradSum {
        ShardedGradSum {
            shards: plan.zero_shards(),
            got: vec![false; trained],
            rounds,
            done: 0,
        }
    }

    /// Adds one micro-batch's gradients (one per trained parameter,
    /// undefined where it gave none; empty when it reached none): every
    /// rank's are reduce-scattered into the shards.
    pub fn add(&mut self, dist: &Distributed, plan: &ShardPlan, grads: &[Tensor]) -> Result<()> {
        ensure!(
            self.done < self.rounds,
            "rank {}: more micro-batches than the {} agreed with the other ranks",
            dist.rank(),
            self.rounds
        );
        let none;
        let grads = if grads.is_empty() {
            none = (0..self.got.len())
                .map(|_| Tensor::new())
                .collect::<Vec<_>>();
            &none
        } else {
            grads
        };
        ensure!(
            grads.len() == self.got.len(),
            "{} gradients for {} trained parameters",
            grads.len(),
            self.got.len()
        );
        for (got, g) in self.got.iter_mut().zip(grads) {
            *got |= g.defined();
        }
        plan.reduce_scatter_add(dist, grads, &self.shards, ReduceOp::Sum)
            .with_context(|| {
                format!(
                    "rank {}: reduce-scattering micro-batch {} of {}'s gradients",
                    dist.rank(),
                    self.done + 1,
                    self.rounds
                )
            })?;
        self.done += 1;
        Ok(())
    }

    /// Takes part, with zeros, in the reduce-scatters of the micro-batches
    /// other ranks have and this one has not; then the shards hold the sum.
    pub fn finish(&mut self, dist: &Distributed, plan: &ShardPlan) -> Result<()> {
        while self.done < self.rounds {
            self.add(dist, plan, &[])?;
        }
        Ok(())
    }

    /// Per bucket, this rank's shard of the sum.
    pub fn shards(&self) -> &[Tensor] {
        &self.shards
    }

    /// Per trained parameter: whether this rank's micro-batches reached it.
    pub fn got(&self) -> &[bool] {
        &self.got
    }

    /// Bytes the shards hold.
    pub fn held_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| (s.numel() * s.kind().elt_size_in_bytes()) as u64)
            .sum()
    }
}
