//! The end of every update (GRPO and SFT), once the micro-batches'
//! gradients are summed on each rank: the gradients over ranks, clipping to
//! the global norm, AdamW. The ZeRO stages differ only here:
//!
//! - 0: all-reduce the gradients, every rank updates every parameter;
//! - 1: all-reduce the gradients, each rank updates its shard (its AdamW
//!   state covers that shard only), all-gather the weights;
//! - 2: reduce-scatter the gradients (each rank receives its shard's sum
//!   only), update the shard, all-gather the weights.

use anyhow::{Context, Result};
use lmmhost_distributed::ReduceOp;
use tch::{Kind, Tensor};

use crate::train::data_parallel::DataParallel;
use crate::train::optim::{clip_grad_norm, clip_to_norm, squared_norm, AdamW, GradAccumulator};

/// Applies the summed gradients in `acc` (of `params`, the policy's whole
/// list) at learning rate `lr`, clipped to a global norm of `grad_clip`;
/// returns the norm before clipping.
pub fn apply_gradients(
    dp: &DataParallel,
    opt: &mut AdamW,
    acc: &mut GradAccumulator,
    params: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let stage = opt.zero_stage;
    if stage == 0 || dp.world_size() == 1 {
        dp.all_reduce_grads(acc, params)?;
        let norm = clip_grad_norm(acc.grads(), grad_clip);
        opt.step(params, acc.grads(), lr)?;
        return Ok(norm);
    }
    // Only the parameters that train are sharded; each rank reduces all of
    // them (zeros where its micro-batches gave a parameter no gradient).
    let trained: Vec<usize> = (0..params.len())
        .filter(|&i| params[i].requires_grad())
        .collect();
    let anywhere = dp.grads_anywhere(acc, &trained)?;
    let missing: Vec<usize> = trained
        .iter()
        .copied()
        .filter(|&i| !acc.grads()[i].defined())
        .collect();
    acc.zero_fill(params, &missing);
    if stage == 1 {
        dp.all_reduce_held_grads(acc)?;
    }
    let grads: Vec<Tensor> = trained
        .iter()
        .map(|&i| acc.grads()[i].shallow_clone())
        .collect();
    let plan = opt.shard_state(dp.dist(), params, &trained, &grads)?;
    let shards = if stage == 1 {
        plan.local_shards(&grads)?
    } else {
        plan.reduce_scatter(dp.dist(), &grads, ReduceOp::Sum)
            .context("reduce-scattering the gradients")?
    };
    // Parameters no rank has a gradient for keep their weights and moments.
    let active = if anywhere.iter().all(|&a| a) {
        None
    } else {
        let flags: Vec<Tensor> = trained
            .iter()
            .zip(&anywhere)
            .map(|(&i, &a)| {
                Tensor::full(
                    params[i].size(),
                    f64::from(u8::from(a)),
                    (Kind::Float, params[i].device()),
                )
            })
            .collect();
        Some(plan.local_shards(&flags)?)
    };
    drop(grads);
    // The global norm: every rank's sum of squares of its shards.
    let norm = dp.sum(&[squared_norm(&shards)])?[0].sqrt();
    clip_to_norm(&shards, norm, grad_clip);
    let weights = opt.step_shards(params, &shards, active.as_deref(), lr)?;
    let trained_params: Vec<Tensor> = trained.iter().map(|&i| params[i].shallow_clone()).collect();
    opt.zero
        .as_ref()
        .context("the ZeRO state is not sharded")?
        .plan()
        .all_gather_into(dp.dist(), &weights, &trained_params)
        .context("all-gathering the updated weights")?;
    Ok(norm)
}
