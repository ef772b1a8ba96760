//! Where an update's micro-batch gradients are summed: whole, on every rank
//! (one process, ZeRO stages 0 and 1), or as this rank's shards of the sum
//! over ranks (ZeRO-2 on several ranks: each micro-batch's gradients are
//! reduce-scattered as they come, see `optim/shard_grads.rs`). A whole sum
//! on several ranks can be reduced during the last micro-batch's backward
//! pass (`overlap.rs`).

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::overlap::{Overlap, Reduced};
use crate::train::data_parallel::DataParallel;
use crate::train::optim::{sum_kind, AdamW, GradAccumulator, ShardedGradSum};

pub enum GradSum<'a> {
    Whole(GradAccumulator),
    /// The last micro-batch runs with hooks that reduce as it goes.
    Overlapping(Overlap<'a>),
    /// Reduced over ranks already (by an overlapped backward).
    Reduced(Reduced),
    Shards(ShardedGradSum),
}

impl Default for GradSum<'_> {
    fn default() -> Self {
        GradSum::Whole(GradAccumulator::default())
    }
}

impl<'a> GradSum<'a> {
    /// An empty sum for `params` (the policy's whole list), of which the
    /// micro-batches give gradients for those at `slots` (the ones that
    /// train), in that order; this rank runs `micro_batches` of them. Under
    /// ZeRO-2 the ranks agree on the most micro-batches any of them runs
    /// (each runs that many reduce-scatters), and the optimizer state is
    /// sharded now, so that the sum's shards are laid out as the state's.
    pub fn new(
        dp: &DataParallel,
        opt: &mut AdamW,
        params: &[Tensor],
        slots: Vec<usize>,
        micro_batches: usize,
    ) -> Result<GradSum<'a>> {
        if opt.zero_stage < 2 || dp.world_size() == 1 {
            let acc = GradAccumulator::new(params, slots, opt.master_weights);
            return Ok(GradSum::Whole(acc));
        }
        let rounds = dp.max(&[micro_batches as f64])?[0] as usize;
        let kind = sum_kind(params, opt.master_weights);
        let plan = opt
            .shard_state_for_sums(dp.dist(), params, &slots, kind)
            .context("sharding the optimizer state before the micro-batches")?;
        Ok(GradSum::Shards(ShardedGradSum::new(
            plan,
            slots.len(),
            rounds,
        )))
    }

    /// Whether `arm_overlap` reduces during the last micro-batch's backward
    /// pass (several ranks or a group of one, a whole sum, and
    /// `distributed.overlap_backward`). The caller runs that micro-batch on
    /// its own (no other backward pass alongside) and not through the
    /// recomputing backward, whose layer-by-layer passes would report a
    /// shared parameter's gradient more than once.
    pub fn can_overlap(&self, dp: &DataParallel) -> bool {
        matches!(self, GradSum::Whole(_)) && dp.overlap_backward()
    }

    /// Hooks the parameters that train for the next (last) micro-batch's
    /// backward pass, when `can_overlap`; otherwise nothing.
    pub fn arm_overlap(&mut self, dp: &'a DataParallel, params: &[Tensor]) -> Result<()> {
        if !self.can_overlap(dp) {
            return Ok(());
        }
        let GradSum::Whole(acc) = std::mem::take(self) else {
            bail!("only a whole gradient sum reduces during the backward pass");
        };
        *self = GradSum::Overlapping(Overlap::arm(dp, acc, params)?);
        Ok(())
    }

    /// Adds one micro-batch's gradients (one per slot, undefined where it
    /// gave none; empty when it reached no parameter that trains).
    pub fn add(
        &mut self,
        dp: &DataParallel,
        opt: &AdamW,
        params: &[Tensor],
        grads: &[Tensor],
    ) -> Result<()> {
        match self {
            GradSum::Whole(acc) => {
                acc.add(params, grads);
                Ok(())
            }
            GradSum::Overlapping(o) => o.add(params, grads),
            GradSum::Reduced(_) => bail!("a micro-batch after the gradients were reduced"),
            GradSum::Shards(sum) => {
                let zero = opt.zero.as_ref().context("the ZeRO state is not sharded")?;
                sum.add(dp.dist(), zero.plan(), grads)
            }
        }
    }

    /// Ends the micro-batches: under ZeRO-2 a rank with fewer than the
    /// others takes part in their remaining reduce-scatters (with zeros); an
    /// overlapped sum drops its hooks and finishes its all-reduce. Call it
    /// before any other collective of the update.
    pub fn finish(&mut self, dp: &'a DataParallel, opt: &AdamW, params: &[Tensor]) -> Result<()> {
        // Every rank reduces through the same buckets in the same order:
        // one that ran no micro-batch (an empty share) or none with hooks
        // (the recomputing backward) starts them all here.
        self.arm_overlap(dp, params)?;
        match std::mem::take(self) {
            GradSum::Overlapping(o) => *self = GradSum::Reduced(o.finish(params)?),
            GradSum::Shards(mut sum) => {
                let zero = opt.zero.as_ref().context("the ZeRO state is not sharded")?;
                sum.finish(dp.dist(), zero.plan())?;
                *self = GradSum::Shards(sum);
            }
            other => *self = other,
        }
        Ok(())
    }

    /// Bytes the sum holds on this rank.
    pub fn held_bytes(&self) -> u64 {
        match self {
            GradSum::Whole(acc) | GradSum::Reduced(Reduced { acc, .. }) => acc.held_bytes(),
            GradSum::Overlapping(_) => 0,
            GradSum::Shards(sum) => sum.held_bytes(),
        }
    }
}
