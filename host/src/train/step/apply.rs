//! The end of every update (GRPO and SFT), once the micro-batches'
//! gradients are summed on each rank: the gradients over ranks, clipping to
//! the global norm, AdamW. The ZeRO stages differ here and in where the
//! micro-batches' gradients are summed (`grad_sum.rs`):
//!
//! - 0: all-reduce the gradients, every rank updates every parameter;
//! - 1: all-reduce the gradients, each rank updates its shard (its AdamW
//!   state covers that shard only), all-gather the weights;
//! - 2: each micro-batch's gradients were reduce-scattered as they came, so
//!   each rank holds its shard's sum only; update the shard, all-gather the
//!   weights.

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

use super::grad_sum::GradSum;
use super::overlap::Reduced;
use crate::train::data_parallel::DataParallel;
use crate::train::optim::{
    clip_grad_norm, clip_to_norm, squared_norm, AdamW, GradAccumulator, ShardedGradSum,
};

/// Applies the summed gradients in `acc` (of `params`, the policy's whole
/// list) at learning rate `lr`, clipped to a global norm of `grad_clip`;
/// returns the norm before clipping.
pub fn apply_gradients(
    dp: &DataParallel,
    opt: &mut AdamW,
    acc: &mut GradSum,
    params: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let norm = match acc {
        GradSum::Whole(acc) => apply_whole(dp, opt, acc, params, grad_clip, lr),
        GradSum::Reduced(r) => apply_reduced(dp, opt, r, params, grad_clip, lr),
        GradSum::Overlapping(_) => bail!("the overlapped gradient sum was not finished"),
        GradSum::Shards(sum) => apply_shards(dp, opt, sum, params, grad_clip, lr),
    }?;
    opt.grad_sum_bytes = acc.held_bytes();
    opt.grad_reduce_overlap = match acc {
        GradSum::Reduced(r) => Some(r.overlapped),
        _ => None,
    };
    Ok(norm)
}

/// The gradients' global norm, refused when it is not finite: the loss or
/// the weights diverged, and the step would write NaN into every weight and
/// moment (every rank sees the same norm, so every rank stops).
fn finite(norm: f64) -> Result<f64> {
    ensure!(
        norm.is_finite(),
        "the gradients' norm is {norm}: the loss or the weights are no longer finite (the learning \
         rate is likely too high). The update was not applied and no checkpoint of it written; \
         resume from the last checkpoint with a lower optim.lr (or an optim.grad_clip)"
    );
    Ok(norm)
}

/// ZeRO stages 0 and 1, and any stage on one rank: the sum is whole.
fn apply_whole(
    dp: &DataParallel,
    opt: &mut AdamW,
    acc: &mut GradAccumulator,
    params: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    if !sharded(dp, opt)? {
        dp.all_reduce_grads(acc, params)?;
        return step_whole(opt, acc, params, grad_clip, lr);
    }
    // Only the parameters that train are sharded; each rank reduces all of
    // them (zeros where its micro-batches gave a parameter no gradient).
    let trained = trained(params);
    let anywhere = dp.grads_anywhere(acc, &trained)?;
    let missing: Vec<usize> = trained
        .iter()
        .copied()
        .filter(|&i| !acc.grads()[i].defined())
        .collect();
    acc.zero_fill(params, &missing);
    dp.all_reduce_held_grads(acc)?;
    step_stage1(dp, opt, acc, params, &trained, &anywhere, grad_clip, lr)
}

/// ZeRO stages 0 and 1 after an overlapped backward pass: the sums are
/// reduced already, with zeros for every trained parameter.
fn apply_reduced(
    dp: &DataParallel,
    opt: &mut AdamW,
    r: &mut Reduced,
    params: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let trained = trained(params);
    ensure!(
        trained.len() == r.anywhere.len(),
        "{} trained parameters, {} reduced",
        trained.len(),
        r.anywhere.len()
    );
    if !sharded(dp, opt)? {
        // As after the plain all-reduce: what no rank reached has no
        // gradient, and the optimizer leaves it alone.
        for (&i, &a) in trained.iter().zip(&r.anywhere) {
            if !a {
                r.acc.unset(i);
            }
        }
        return step_whole(opt, &r.acc, params, grad_clip, lr);
    }
    let anywhere = r.anywhere.clone();
    step_stage1(dp, opt, &r.acc, params, &trained, &anywhere, grad_clip, lr)
}

/// Whether the whole sum is applied as ZeRO-1 shards (else by every rank).
fn sharded(dp: &DataParallel, opt: &AdamW) -> Result<bool> {
    let stage = opt.zero_stage;
    if stage == 0 || dp.world_size() == 1 {
        return Ok(false);
    }
    ensure!(
        stage == 1,
        "ZeRO stage {stage} on {} ranks sums the gradients as shards",
        dp.world_size()
    );
    Ok(true)
}

/// Every rank clips and applies the whole reduced sum.
fn step_whole(
    opt: &mut AdamW,
    acc: &GradAccumulator,
    params: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let norm = finite(clip_grad_norm(acc.grads(), grad_clip))?;
    opt.step(params, acc.grads(), lr)?;
    Ok(norm)
}

/// ZeRO-1: each rank takes its shards of the reduced sum and updates them.
#[allow(clippy::too_many_arguments)]
fn step_stage1(
    dp: &DataParallel,
    opt: &mut AdamW,
    acc: &GradAccumulator,
    params: &[Tensor],
    trained: &[usize],
    anywhere: &[bool],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let grads: Vec<Tensor> = trained
        .iter()
        .map(|&i| acc.grads()[i].shallow_clone())
        .collect();
    let plan = opt.shard_state(dp.dist(), params, trained, &grads)?;
    let shards = plan.local_shards(&grads)?;
    drop(grads);
    step_sharded(dp, opt, params, trained, anywhere, &shards, grad_clip, lr)
}

/// ZeRO-2 on several ranks: the sum is this rank's shards already (once it
/// has taken part in the reduce-scatters of the micro-batches it lacks).
fn apply_shards(
    dp: &DataParallel,
    opt: &mut AdamW,
    sum: &mut ShardedGradSum,
    params: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let zero = opt.zero.as_ref().context("the ZeRO state is not sharded")?;
    sum.finish(dp.dist(), zero.plan())?;
    let anywhere = dp.any_rank(sum.got())?;
    let shards: Vec<Tensor> = sum.shards().iter().map(Tensor::shallow_clone).collect();
    step_sharded(
        dp,
        opt,
        params,
        &trained(params),
        &anywhere,
        &shards,
        grad_clip,
        lr,
    )
}

/// The indices of the parameters that train (the sharded ones).
fn trained(params: &[Tensor]) -> Vec<usize> {
    (0..params.len())
        .filter(|&i| params[i].requires_grad())
        .collect()
}

/// The sharded update from this rank's `shards` of the reduced gradients of
/// the parameters at `trained`: clipping to the global norm, AdamW on the
/// shards, the weights all-gathered. A parameter no rank has a gradient for
/// (`anywhere` false) keeps its weights and moments.
#[allow(clippy::too_many_arguments)]
fn step_sharded(
    dp: &DataParallel,
    opt: &mut AdamW,
    params: &[Tensor],
    trained: &[usize],
    anywhere: &[bool],
    shards: &[Tensor],
    grad_clip: f64,
    lr: f64,
) -> Result<f64> {
    let plan = opt
        .zero
        .as_ref()
        .context("the ZeRO state is not sharded")?
        .plan();
    let active = if anywhere.iter().all(|&a| a) {
        None
    } else {
        // Broadcast flags: only a bucket at a time is laid out whole.
        let flags: Vec<Tensor> = trained
            .iter()
            .zip(anywhere)
            .map(|(&i, &a)| {
                let device = params[i].device();
                Tensor::full([0i64; 0], i64::from(u8::from(a)), (Kind::Uint8, device))
                    .expand(params[i].size(), false)
            })
            .collect();
        Some(plan.local_shards(&flags)?)
    };
    // The global norm: every rank's sum of squares of its shards.
    let norm = finite(dp.sum(&[squared_norm(shards)])?[0].sqrt())?;
    clip_to_norm(shards, norm, grad_clip);
    let weights = opt.step_shards(params, shards, active.as_deref(), lr)?;
    let trained_params: Vec<Tensor> = trained.iter().map(|&i| params[i].shallow_clone()).collect();
    opt.zero
        .as_ref()
        .context("the ZeRO state is not sharded")?
        .plan()
        .all_gather_into(dp.dist(), &weights, &trained_params)
        .context("all-gathering the updated weights")?;
    Ok(norm)
}
