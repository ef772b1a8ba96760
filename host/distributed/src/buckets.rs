//! Gradient all-reduce in buckets, as DDP does it: consecutive gradients of
//! one dtype and device are flattened into buffers of about `bucket_bytes`,
//! each buffer is all-reduced as one message, and the result is copied back.
//! Few large messages cost far less than one per parameter; at most
//! `IN_FLIGHT` buckets are on the wire at once, so the extra memory is two
//! buckets, not a second copy of every gradient.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::distributed::Distributed;
use crate::process_group::{ProcessGroup, ReduceOp, Work};

/// Buckets reduced concurrently: one on the wire while the next is flattened.
pub(crate) const IN_FLIGHT: usize = 2;

#[derive(Debug)]
struct Bucket {
    /// Indices into the tensor list, in order.
    members: Vec<usize>,
    numel: i64,
}

/// The bucket layout of a fixed list of tensors (compute once per model).
#[derive(Debug)]
pub struct GradBuckets {
    buckets: Vec<Bucket>,
    shapes: Vec<(Vec<i64>, Kind, Device)>,
}

impl GradBuckets {
    /// Groups `tensors` (the gradients, or the parameters they belong to: only
    /// shape, dtype and device are read) in order into buckets of at most
    /// `bucket_bytes` (a larger tensor gets a bucket of its own).
    pub fn new(tensors: &[Tensor], bucket_bytes: usize) -> GradBuckets {
        let shapes: Vec<_> = tensors
            .iter()
            .map(|t| (t.size(), t.kind(), t.device()))
            .collect();
        GradBuckets::from_shapes(shapes, bucket_bytes)
    }

    /// As `new`, from the tensors' shapes, dtypes and devices.
    pub fn from_shapes(shapes: Vec<(Vec<i64>, Kind, Device)>, bucket_bytes: usize) -> GradBuckets {
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut bytes = 0usize;
        for (i, (shape, kind, device)) in shapes.iter().enumerate() {
            let numel: i64 = shape.iter().product();
            let size = numel as usize * kind.elt_size_in_bytes();
            let fits = buckets.last().is_some_and(|b| {
                let (_, k, d) = &shapes[b.members[0]];
                k == kind && d == device && bytes + size <= bucket_bytes
            });
            if fits {
                let last = buckets.last_mut().expect("checked above");
                last.members.push(i);
                last.numel += numel;
                bytes += size;
            } else {
                buckets.push(Bucket {
                    members: vec![i],
                    numel,
                });
                bytes = size;
            }
        }
        GradBuckets { buckets, shapes }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The tensor indices of each bucket, in order.
    pub fn members(&self) -> Vec<Vec<usize>> {
        self.buckets.iter().map(|b| b.members.clone()).collect()
    }

    pub(crate) fn check(&self, what: &str, tensors: &[Tensor]) -> Result<()> {
        self.check_layout(what, tensors, true)
    }

    /// As `check`; with `same_kind = false` a tensor may hold another dtype
    /// than the layout's (parameters stored in bf16 whose shards are f32).
    pub(crate) fn check_layout(
        &self,
        what: &str,
        tensors: &[Tensor],
        same_kind: bool,
    ) -> Result<()> {
        self.check_each(what, tensors, same_kind, false)
    }

    /// As `check_layout`, with `undefined_ok`: an undefined tensor stands
    /// for zeros (a gradient this rank has none of).
    pub(crate) fn check_each(
        &self,
        what: &str,
        tensors: &[Tensor],
        same_kind: bool,
        undefined_ok: bool,
    ) -> Result<()> {
        if tensors.len() != self.shapes.len() {
            bail!(
                "{what}: laid out for {} tensors, got {}",
                self.shapes.len(),
                tensors.len()
            );
        }
        for (i, (t, (shape, kind, device))) in tensors.iter().zip(&self.shapes).enumerate() {
            if !t.defined() {
                if undefined_ok {
                    continue;
                }
                bail!(
                    "{what}: tensor {i} is undefined; every rank must hold a gradient for every \
                     parameter (see materialize_grads)"
                );
            }
            if &t.size() != shape || (same_kind && t.kind() != *kind) || t.device() != *device {
                bail!(
                    "{what}: tensor {i} is {:?} {:?} on {:?}, the layout has {shape:?} {kind:?} on {device:?}",
                    t.size(),
                    t.kind(),
                    t.device()
                );
            }
        }
        Ok(())
    }

    /// Elements of tensor `i`.
    pub(crate) fn numel_of(&self, i: usize) -> i64 {
        self.shapes[i].0.iter().product()
    }

    /// The dtype and device of bucket `b` (those of its first tensor).
    pub(crate) fn kind_device(&self, b: usize) -> (Kind, Device) {
        let (_, kind, device) = &self.shapes[self.buckets[b].members[0]];
        (*kind, *device)
    }

    /// Numel of each bucket, in order.
    pub(crate) fn numels(&self) -> Vec<i64> {
        self.buckets.iter().map(|b| b.numel).collect()
    }

    /// All-reduces `grads` in place (every one defined, laid out as at
    /// `new`); `ReduceOp::Avg` gives the data-parallel mean. Nothing to do
    /// in a single-process world.
    pub fn all_reduce(&self, dist: &Distributed, grads: &[Tensor], op: ReduceOp) -> Result<()> {
        self.check("bucketed all_reduce", grads)?;
        let Some(group) = dist.group() else {
            return Ok(());
        };
        let mut pending: std::collections::VecDeque<InFlight> = Default::default();
        let members = |b: usize| -> Vec<Tensor> {
            self.buckets[b]
                .members
                .iter()
                .map(|&i| grads[i].shallow_clone())
                .collect()
        };
        tch::no_grad(|| -> Result<()> {
            for b in 0..self.buckets.len() {
                if pending.len() == IN_FLIGHT {
                    let oldest = pending.pop_front().expect("non-empty");
                    let targets = members(oldest.bucket);
                    oldest.complete(&targets)?;
                }
                pending.push_back(InFlight::start(group, b, &members(b), op)?);
            }
            while let Some(f) = pending.pop_front() {
                let targets = members(f.bucket);
                f.complete(&targets)?;
            }
            Ok(())
        })
    }
}

/// One bucket's all-reduce on the wire.
pub(crate) struct InFlight {
    work: Work,
    pub(crate) bucket: usize,
    /// The flat copy the bucket is reduced in (`None`: a single contiguous
    /// tensor, reduced in place).
    flat: Option<Tensor>,
}

impl InFlight {
    /// Starts the all-reduce of bucket `bucket`, whose tensors are `tensors`
    /// (every one defined).
    pub(crate) fn start(
        group: &ProcessGroup,
        bucket: usize,
        tensors: &[Tensor],
        op: ReduceOp,
    ) -> Result<InFlight> {
        tch::no_grad(|| {
            let (work, flat) = match tensors {
                [only] if only.is_contiguous() => (group.all_reduce_async(only, op)?, None),
                _ => {
                    let flat = flatten(tensors);
                    (group.all_reduce_async(&flat, op)?, Some(flat))
                }
            };
            Ok(InFlight { work, bucket, flat })
        })
    }

    /// Waits for it and writes the result into `targets` (the bucket's
    /// tensors, in order).
    pub(crate) fn complete(self, targets: &[Tensor]) -> Result<()> {
        self.work.wait()?;
        if let Some(flat) = self.flat {
            unflatten_into(&flat, targets);
        }
        Ok(())
    }
}

/// The tensors one after the other in one flat tensor (a bucket's message).
fn flatten(tensors: &[Tensor]) -> Tensor {
    Tensor::cat(
        &tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
        0,
    )
}

/// Copies `flat` back into `targets`, in order (the inverse of `flatten`).
fn unflatten_into(flat: &Tensor, targets: &[Tensor]) {
    let mut offset = 0i64;
    for t in targets {
        let mut t = t.shallow_clone();
        let n = t.numel() as i64;
        tch::no_grad(|| t.copy_(&flat.narrow(0, offset, n).view_as(&t)));
        offset += n;
    }
}

/// Gives every parameter that requires a gradient but has none (it took no
/// part in this rank's forward pass) a zero gradient, so that all ranks
/// reduce the same list.
pub fn materialize_grads(params: &[Tensor]) {
    for p in params {
        if p.requires_grad() && !p.grad().defined() {
            (p.sum(p.kind()) * 0.0).backward();
        }
    }
}
