//! Where an update's micro-batch gradients are summed: whole, on every rank
//! (one process, ZeRO stages 0 and 1), or as this rank's shards of the sum
//! over ranks (ZeRO-2 on several ranks: each micro-batch's gradients are
//! reduce-scattered as they come, see `optim/shard_grads.rs`).

use anyhow::{Context, Result};
use tch::Tensor;

use crate::train::data_parallel::DataParallel;
use crate::train::optim::{sum_kind, AdamW, GradAccumulator, ShardedGradSum};

pub enum GradSum {
    Whole(GradAccumulator),
    Shards(ShardedGradSum),
}

impl GradSum {
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
    ) -> Result<GradSum> {
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
            GradSum::Shards(sum) => {
                let zero = opt.zero.as_ref().context("the ZeRO state is not sharded")?;
                sum.add(dp.dist(), zero.plan(), grads)
            }
        }
    }

    /// Ends the micro-batches: under ZeRO-2 a rank with fewer than the
    /// others takes part in their remaining reduce-scatters (with zeros).
    /// Call it before any other collective of the update.
    pub fn finish(&mut self, dp: &DataParallel, opt: &AdamW) -> Result<()> {
        match self {
            GradSum::Whole(_) => Ok(()),
            GradSum::Shards(sum) => {
                let zero = opt.zero.as_ref().context("the ZeRO state is not sharded")?;
                sum.finish(dp.dist(), zero.plan())
            }
        }
    }

    /// Bytes the sum holds on this rank.
    pub fn held_bytes(&self) -> u64 {
        match self {
            GradSum::Whole(acc) => acc.held_bytes(),
            GradSum::Shards(sum) => sum.held_bytes(),
        }
    }
}
