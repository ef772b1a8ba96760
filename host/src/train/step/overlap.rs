//! The gradient all-reduce started during the last micro-batch's backward
//! pass (ZeRO stages 0 and 1 on several ranks, as DDP overlaps it): hooks
//! take each trained parameter's gradient as soon as the backward finishes
//! it, add it into the update's sum, and start the sum's bucket once every
//! gradient in it is final (`OverlappedAllReduce`). The earlier
//! micro-batches were summed as usual; what the last one never reaches on
//! this rank is reduced after it, as zeros, like every other rank's.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use lmmhost_distributed::{GradHooks, InBackward, OverlappedAllReduce};
use tch::Tensor;

use crate::train::data_parallel::DataParallel;
use crate::train::optim::GradAccumulator;

struct State {
    acc: GradAccumulator,
    reducer: OverlappedAllReduce,
    /// The parameters (indices into the policy's list) the hooks are on.
    slots: Vec<usize>,
    /// Per slot: whether a hook took its gradient in this backward pass.
    taken: Vec<bool>,
}

/// The sum while the last micro-batch runs, with hooks on the parameters.
pub struct Overlap<'a> {
    state: Arc<Mutex<State>>,
    hooks: GradHooks<'a>,
    dp: &'a DataParallel,
}

/// What an overlapped reduction leaves: the sums over ranks, and per slot
/// whether any rank's micro-batches gave that parameter a gradient.
pub struct Reduced {
    pub acc: GradAccumulator,
    pub anywhere: Vec<bool>,
    /// The fraction of the reduced bytes whose all-reduce started during the
    /// backward pass.
    pub overlapped: f64,
}

impl<'a> Overlap<'a> {
    /// Hooks the parameters of `params` that train for the next backward
    /// pass; `acc` holds the earlier micro-batches' sum. Call it while no
    /// backward pass runs.
    pub fn arm(
        dp: &'a DataParallel,
        acc: GradAccumulator,
        params: &[Tensor],
    ) -> Result<Overlap<'a>> {
        let slots: Vec<usize> = (0..params.len())
            .filter(|&i| params[i].requires_grad())
            .collect();
        let kind = acc.sum_kind();
        let shapes = slots
            .iter()
            .map(|&i| {
                let p = &params[i];
                (p.size(), kind.unwrap_or(p.kind()), p.device())
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            acc,
            reducer: OverlappedAllReduce::new(shapes, dp.bucket_bytes()),
            taken: vec![false; slots.len()],
            slots: slots.clone(),
        }));
        let hooked: Vec<Tensor> = slots.iter().map(|&i| params[i].shallow_clone()).collect();
        // SAFETY: while the hooks are in place this rank's thread only waits
        // for the backward pass (the step issues no collective until
        // `finish`, which drops the hooks first).
        let during = unsafe { InBackward::new(dp.dist()) };
        let shared = Arc::clone(&state);
        let hooks = GradHooks::take(&hooked, move |pos, grad| {
            let mut guard = shared
                .lock()
                .map_err(|_| anyhow!("the gradient sum's lock is poisoned"))?;
            let State {
                acc,
                reducer,
                slots,
                taken,
            } = &mut *guard;
            acc.add_one(slots[pos], &grad);
            taken[pos] = true;
            let sum = |k: usize| acc.grads()[slots[k]].shallow_clone();
            reducer.ready(during.get(), pos, &sum)
        })?;
        Ok(Overlap { state, hooks, dp })
    }

    /// Adds what the last micro-batch's backward returned (one per slot)
    /// besides what the hooks took.
    pub fn add(&self, params: &[Tensor], grads: &[Tensor]) -> Result<()> {
        self.hooks.check()?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow!("the gradient sum's lock is poisoned"))?;
        let rest: Vec<Tensor> = grads
            .iter()
            .zip(&state.taken)
            .map(|(g, &t)| if t { Tensor::new() } else { g.shallow_clone() })
            .collect();
        state.acc.add(params, &rest);
        Ok(())
    }

    /// Removes the hooks, reduces what is left and waits for every bucket.
    pub fn finish(self, params: &[Tensor]) -> Result<Reduced> {
        let Overlap { state, hooks, dp } = self;
        hooks.check()?;
        drop(hooks);
        let State {
            mut acc,
            reducer,
            slots,
            ..
        } = Arc::try_unwrap(state)
            .map_err(|_| anyhow!("the gradient hooks still hold the sum"))?
            .into_inner()
            .map_err(|_| anyhow!("the gradient sum's lock is poisoned"))?;
        let got: Vec<bool> = slots.iter().map(|&i| acc.grads()[i].defined()).collect();
        let missing: Vec<usize> = slots
            .iter()
            .zip(&got)
            .filter(|(_, &g)| !g)
            .map(|(&i, _)| i)
            .collect();
        acc.zero_fill(params, &missing);
        let sum = |k: usize| acc.grads()[slots[k]].shallow_clone();
        let overlapped = reducer
            .finish(dp.dist(), &sum)
            .context("all-reducing the gradients")?;
        let anywhere = dp.any_rank(&got)?;
        Ok(Reduced {
            acc,
            anywhere,
            overlapped,
        })
    }
}
