//! The gradient all-reduce overlapped with the backward pass, as DDP's
//! reducer does it. Buckets are laid out over the tensors in reverse, the
//! order in which the backward pass finishes their gradients; a bucket's
//! all-reduce starts as soon as every tensor in it is final, and buckets
//! start in order on every rank: c10d pairs the ranks' collectives by their
//! order, so no rank may start bucket 3 before bucket 2. Buckets holding a
//! tensor the backward never reached on this rank start after it.

use std::collections::VecDeque;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::buckets::{GradBuckets, InFlight, IN_FLIGHT};
use crate::distributed::Distributed;
use crate::grad_hooks::{GradHooks, InBackward};
use crate::process_group::ReduceOp;

/// A sum over ranks of a fixed list of tensors, started bucket by bucket
/// while they are being computed. The tensors themselves are read through
/// a lookup (`tensor(i)`), as the caller keeps them.
pub struct OverlappedAllReduce {
    /// The tensors (indices) of each bucket, in the order they start.
    members: Vec<Vec<usize>>,
    bucket_of: Vec<usize>,
    /// Bytes of each bucket.
    bytes: Vec<u64>,
    /// Tensors of each bucket not final yet.
    left: Vec<usize>,
    /// The next bucket to start.
    next: usize,
    in_flight: VecDeque<InFlight>,
    /// Bytes of the buckets started so far.
    bytes_started: u64,
    /// Bytes of the buckets started before the last `ready` call, i.e.
    /// while the backward pass was still computing gradients.
    bytes_early: u64,
}

impl OverlappedAllReduce {
    /// For tensors of these shapes, dtypes and devices (in parameter order),
    /// in buckets of at most `bucket_bytes` (a larger tensor gets its own).
    pub fn new(shapes: Vec<(Vec<i64>, Kind, Device)>, bucket_bytes: usize) -> OverlappedAllReduce {
        let n = shapes.len();
        // Position `j` of the reversed list is tensor `n-1-j`.
        let reversed: Vec<_> = shapes.into_iter().rev().collect();
        let layout = GradBuckets::from_shapes(reversed, bucket_bytes);
        let members: Vec<Vec<usize>> = layout
            .members()
            .into_iter()
            .map(|m| m.into_iter().map(|j| n - 1 - j).collect())
            .collect();
        let mut bucket_of = vec![0; n];
        for (b, m) in members.iter().enumerate() {
            for &i in m {
                bucket_of[i] = b;
            }
        }
        let bytes = layout
            .numels()
            .iter()
            .enumerate()
            .map(|(b, &numel)| numel as u64 * layout.kind_device(b).0.elt_size_in_bytes() as u64)
            .collect();
        OverlappedAllReduce {
            left: members.iter().map(Vec::len).collect(),
            members,
            bucket_of,
            bytes,
            next: 0,
            in_flight: VecDeque::new(),
            bytes_started: 0,
            bytes_early: 0,
        }
    }

    /// Tensor `i` is final: starts every bucket whose turn has come and
    /// whose tensors are all final. Call it once per tensor at most.
    pub fn ready(
        &mut self,
        dist: &Distributed,
        i: usize,
        tensor: &dyn Fn(usize) -> Tensor,
    ) -> Result<()> {
        let b = self.bucket_of[i];
        if self.left[b] == 0 {
            bail!("gradient {i} was reported final twice in one backward pass");
        }
        self.left[b] -= 1;
        // What started before this gradient was final overlapped with
        // computing it; the last gradient's own buckets overlap nothing.
        self.bytes_early = self.bytes_started;
        while self.next < self.members.len() && self.left[self.next] == 0 {
            self.start(dist, tensor)?;
        }
        Ok(())
    }

    /// After the backward pass: starts the remaining buckets (every tensor
    /// must be defined now), waits for all and writes the sums back into the
    /// tensors. Returns the fraction of the bytes whose reduction started
    /// while the backward pass was still computing gradients (before the
    /// last one was final): 0 with a single bucket, whatever its timing.
    pub fn finish(mut self, dist: &Distributed, tensor: &dyn Fn(usize) -> Tensor) -> Result<f64> {
        while self.next < self.members.len() {
            self.start(dist, tensor)?;
        }
        while let Some(f) = self.in_flight.pop_front() {
            self.complete(f, tensor)?;
        }
        Ok(if self.bytes_started == 0 {
            0.0
        } else {
            self.bytes_early as f64 / self.bytes_started as f64
        })
    }

    /// Starts bucket `next` (after finishing the oldest one in flight if
    /// `IN_FLIGHT` are on the wire: the extra memory stays at a few buckets).
    fn start(&mut self, dist: &Distributed, tensor: &dyn Fn(usize) -> Tensor) -> Result<()> {
        let Some(group) = dist.group() else {
            bail!("an overlapped all-reduce needs a process group");
        };
        if self.in_flight.len() == IN_FLIGHT {
            let oldest = self.in_flight.pop_front().context("one is in flight")?;
            self.complete(oldest, tensor)?;
        }
        let b = self.next;
        let tensors: Vec<Tensor> = self.members[b].iter().map(|&i| tensor(i)).collect();
        if let Some(i) = tensors.iter().position(|t| !t.defined()) {
            bail!(
                "gradient {} has no value when its bucket is reduced",
                self.members[b][i]
            );
        }
        let in_flight = InFlight::start(group, b, &tensors, ReduceOp::Sum)
            .with_context(|| format!("starting the all-reduce of gradient bucket {b}"))?;
        self.in_flight.push_back(in_flight);
        self.bytes_started += self.bytes[b];
        self.next += 1;
        Ok(())
    }

    fn complete(&self, f: InFlight, tensor: &dyn Fn(usize) -> Tensor) -> Result<()> {
        let b = f.bucket;
        let targets: Vec<Tensor> = self.members[b].iter().map(|&i| tensor(i)).collect();
        f.complete(&targets)
            .with_context(|| format!("the all-reduce of gradient bucket {b}"))
    }
}

/// The gradients of `loss` with respect to `params`, summed over ranks by
/// an all-reduce that starts bucket by bucket during the backward pass (the
/// whole of DDP's backward, for a caller that sums nothing of its own). A
/// parameter the backward does not reach on this rank counts as zeros.
/// Returns the sums and the share of their bytes started before the last
/// gradient was final.
pub fn backward_all_reduced(
    dist: &Distributed,
    loss: &Tensor,
    params: &[Tensor],
    bucket_bytes: usize,
) -> Result<(Vec<Tensor>, f64)> {
    let shapes = params
        .iter()
        .map(|p| (p.size(), p.kind(), p.device()))
        .collect();
    let poisoned = || anyhow!("a gradient hook panicked holding the sums");
    // The sums so far and the reducer, as the hooks update them.
    let state = Mutex::new((
        params.iter().map(|_| Tensor::new()).collect::<Vec<_>>(),
        OverlappedAllReduce::new(shapes, bucket_bytes),
    ));
    // SAFETY: this thread issues nothing while it waits in the backward
    // pass, which is where the hooks run.
    let during = unsafe { InBackward::new(dist) };
    let hooks = GradHooks::take(params, |i, g| {
        let mut guard = state.lock().map_err(|_| poisoned())?;
        let (sums, reducer) = &mut *guard;
        sums[i] = g;
        reducer.ready(during.get(), i, &|j| sums[j].shallow_clone())
    })?;
    let _ = Tensor::f_run_backward(&[loss], params, false, false)?;
    hooks.check()?;
    drop(hooks);
    let (mut sums, reducer) = state.into_inner().map_err(|_| poisoned())?;
    for (s, p) in sums.iter_mut().zip(params) {
        if !s.defined() {
            *s = p.zeros_like();
        }
    }
    let early = reducer.finish(dist, &|j| sums[j].shallow_clone())?;
    Ok((sums, early))
}
