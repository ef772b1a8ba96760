//! ZeRO-1/2 partitioning: the parameters are grouped into flat buckets (as
//! for gradient all-reduce), each bucket is padded to a multiple of the world
//! size and split into equal contiguous shards, and rank r owns shard r of
//! every bucket: its slice of the master weights and of the optimizer state.
//!
//! A step is then: `reduce_scatter` the gradients (each rank receives the
//! reduced gradient of its shard only; ZeRO-2), update the owned shard, and
//! `all_gather_into` the parameters so every rank holds the new weights.
//! ZeRO-1 all-reduces full gradients instead and takes `local_shards` of them.
//! With gradient accumulation ZeRO-2 reduce-scatters each micro-batch's
//! gradients into shard sums (`zero_shards`, `reduce_scatter_add`).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::buckets::GradBuckets;
use crate::distributed::Distributed;
use crate::process_group::{ReduceOp, Work};

#[derive(Debug)]
pub struct ShardPlan {
    layout: GradBuckets,
    members: Vec<Vec<usize>>,
    /// Per bucket: real numel and per-rank shard numel.
    sizes: Vec<(i64, i64)>,
    rank: usize,
    world_size: usize,
}

impl ShardPlan {
    /// Partitions `params` (in order, buckets of at most `bucket_bytes` of one
    /// dtype and device) among the ranks of `dist`.
    pub fn new(params: &[Tensor], bucket_bytes: usize, dist: &Distributed) -> ShardPlan {
        ShardPlan::for_rank(params, bucket_bytes, dist.rank(), dist.world_size())
    }

    /// As `new`, for an explicit rank of `world_size` (e.g. to re-shard a
    /// checkpoint written by another number of ranks).
    pub fn for_rank(
        params: &[Tensor],
        bucket_bytes: usize,
        rank: usize,
        world_size: usize,
    ) -> ShardPlan {
        let layout = GradBuckets::new(params, bucket_bytes);
        let w = world_size as i64;
        let sizes = layout
            .numels()
            .into_iter()
            .map(|n| (n, (n + w - 1) / w))
            .collect();
        ShardPlan {
            members: layout.members(),
            layout,
            sizes,
            rank,
            world_size,
        }
    }

    /// Number of buckets (and of shards this rank owns).
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// The ranks the buckets are split among.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The rank whose shards the plan hands out.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The tensors (indices into the plan's list) of bucket `b`, in the
    /// order they are laid out in it.
    pub fn members(&self, b: usize) -> &[usize] {
        &self.members[b]
    }

    /// Elements of bucket `b` (its members', without padding) and of each
    /// rank's shard of it.
    pub fn bucket_numel(&self, b: usize) -> (i64, i64) {
        self.sizes[b]
    }

    /// Elements of this rank's shard of bucket `b`, and how many of them are
    /// real (the rest pad the bucket's last shard).
    pub fn shard_numel(&self, b: usize) -> (i64, i64) {
        let (numel, shard) = self.sizes[b];
        let start = self.rank as i64 * shard;
        (shard, (numel - start).clamp(0, shard))
    }

    /// Bucket `b` of `tensors` as one flat tensor, zero-padded to world x shard.
    fn flatten(&self, b: usize, tensors: &[Tensor]) -> Tensor {
        let members = &self.members[b];
        let (numel, shard) = self.sizes[b];
        let mut parts: Vec<Tensor> = members.iter().map(|&i| tensors[i].reshape([-1])).collect();
        let pad = shard * self.world_size as i64 - numel;
        if pad > 0 {
            let first = &tensors[members[0]];
            parts.push(Tensor::zeros([pad], (first.kind(), first.device())));
        }
        Tensor::cat(&parts, 0)
    }

    /// This rank's shard of every bucket of `tensors` (copies, in the
    /// tensors' dtype, which may differ from the layout's): the master
    /// weights at the start, or the local part of all-reduced gradients (ZeRO-1).
    pub fn local_shards(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        self.layout.check_layout("local_shards", tensors, false)?;
        Ok(tch::no_grad(|| {
            (0..self.len())
                .map(|b| {
                    let shard = self.sizes[b].1;
                    self.flatten(b, tensors)
                        .narrow(0, self.rank as i64 * shard, shard)
                        .contiguous()
                        .copy()
                })
                .collect()
        }))
    }

    /// Reduces `grads` across ranks and returns, per bucket, this rank's
    /// shard of the result (ZeRO-2: no rank holds the full reduced gradient).
    pub fn reduce_scatter(
        &self,
        dist: &Distributed,
        grads: &[Tensor],
        op: ReduceOp,
    ) -> Result<Vec<Tensor>> {
        self.layout.check("sharded reduce_scatter", grads)?;
        let Some(group) = dist.group() else {
            return self.local_shards(grads);
        };
        tch::no_grad(|| {
            let mut shards = Vec::with_capacity(self.len());
            let mut pending: Option<Work> = None;
            for b in 0..self.len() {
                let flat = self.flatten(b, grads);
                let out = Tensor::empty([self.sizes[b].1], (flat.kind(), flat.device()));
                let work = group.reduce_scatter_into_async(&out, &flat, op)?;
                // One bucket in flight while the next is flattened.
                if let Some(previous) = pending.replace(work) {
                    previous.wait()?;
                }
                shards.push(out);
            }
            if let Some(last) = pending {
                last.wait()?;
            }
            Ok(shards)
        })
    }

    /// Per bucket, a shard of zeros in the layout's dtype, on its device:
    /// where a sum over micro-batches of `reduce_scatter_add` starts.
    pub fn zero_shards(&self) -> Vec<Tensor> {
        (0..self.len())
            .map(|b| Tensor::zeros([self.sizes[b].1], self.layout.kind_device(b)))
            .collect()
    }

    /// Reduces `grads` across ranks and adds, per bucket, this rank's shard
    /// of the result into `sums` (from `zero_shards`): one micro-batch's
    /// reduce-scatter under ZeRO-2, so that no rank holds more than its
    /// shards of the sum over micro-batches. `grads` may be of another dtype
    /// than the sums (they are converted one bucket at a time), and an
    /// undefined one (a parameter this rank's micro-batch did not reach, or
    /// a round a rank with fewer micro-batches takes part in) counts as
    /// zeros. Every rank must call it as often as the others.
    pub fn reduce_scatter_add(
        &self,
        dist: &Distributed,
        grads: &[Tensor],
        sums: &[Tensor],
        op: ReduceOp,
    ) -> Result<()> {
        self.layout
            .check_each("sharded reduce_scatter_add", grads, false, true)?;
        self.check_shards("sharded reduce_scatter_add", sums)?;
        tch::no_grad(|| {
            let mut pending: Option<(Work, usize, Tensor, Tensor)> = None;
            for (b, sum) in sums.iter().enumerate() {
                let shard = self.sizes[b].1;
                let flat = self.flatten_as(b, grads, sum.kind(), sum.device());
                let Some(group) = dist.group() else {
                    let mut sum = sum.shallow_clone();
                    let _ = sum.g_add_(&flat.narrow(0, self.rank as i64 * shard, shard));
                    continue;
                };
                let out = Tensor::empty([shard], (sum.kind(), sum.device()));
                let work = group.reduce_scatter_into_async(&out, &flat, op)?;
                // One bucket in flight while the next is flattened.
                if let Some((work, prev, received, _)) = pending.replace((work, b, out, flat)) {
                    work.wait()?;
                    let _ = sums[prev].shallow_clone().g_add_(&received);
                }
            }
            if let Some((work, prev, received, _)) = pending {
                work.wait()?;
                let _ = sums[prev].shallow_clone().g_add_(&received);
            }
            Ok(())
        })
    }

    /// That `shards` are one per bucket, each of this rank's shard size.
    fn check_shards(&self, what: &str, shards: &[Tensor]) -> Result<()> {
        if shards.len() != self.len() {
            bail!("{what}: {} shards for {} buckets", shards.len(), self.len());
        }
        for (b, s) in shards.iter().enumerate() {
            let want = self.sizes[b].1;
            if s.numel() as i64 != want {
                bail!(
                    "{what}: shard {b} has {} elements, the plan has {want}",
                    s.numel()
                );
            }
        }
        Ok(())
    }

    /// Bucket `b` of `tensors` as one flat tensor of `kind` on `device`,
    /// zero-padded to world x shard; an undefined tensor gives zeros.
    fn flatten_as(&self, b: usize, tensors: &[Tensor], kind: Kind, device: Device) -> Tensor {
        let (_, shard) = self.sizes[b];
        let flat = Tensor::zeros([shard * self.world_size as i64], (kind, device));
        let mut offset = 0i64;
        for &i in &self.members[b] {
            let n = self.layout.numel_of(i);
            let t = &tensors[i];
            if t.defined() {
                flat.narrow(0, offset, n).copy_(&t.reshape([-1]));
            }
            offset += n;
        }
        flat
    }

    /// Gathers every rank's `shards` and writes the full values into
    /// `targets` (the parameters after an update, or full-size copies of
    /// optimizer state for a checkpoint), in place.
    pub fn all_gather_into(
        &self,
        dist: &Distributed,
        shards: &[Tensor],
        targets: &[Tensor],
    ) -> Result<()> {
        // The targets may be stored narrower than the shards (bf16 parameters
        // of f32 master weights): the shards are sent in the targets' dtype.
        self.layout
            .check_layout("sharded all_gather", targets, false)?;
        let shards: Vec<Tensor> = shards
            .iter()
            .zip(&self.members)
            .map(|(s, m)| s.to_kind(targets[m[0]].kind()))
            .collect();
        self.all_gather_each(dist, &shards, |_, members, full| {
            let mut offset = 0i64;
            for &i in members {
                let mut t = targets[i].shallow_clone();
                let n = t.numel() as i64;
                t.copy_(&full.narrow(0, offset, n).view_as(&t));
                offset += n;
            }
            Ok(())
        })
    }

    /// Gathers every rank's `shards`, one bucket at a time, and hands `each`
    /// the bucket's index, its members (indices into the plan's tensor
    /// list) and its whole flat values (members in order, then padding):
    /// e.g. to write optimizer state out without holding all of it.
    pub fn all_gather_each(
        &self,
        dist: &Distributed,
        shards: &[Tensor],
        mut each: impl FnMut(usize, &[usize], &Tensor) -> Result<()>,
    ) -> Result<()> {
        self.check_shards("sharded all_gather", shards)?;
        tch::no_grad(|| {
            for (b, shard) in shards.iter().enumerate() {
                let shard = shard.contiguous();
                let full = match dist.group() {
                    Some(group) => group.all_gather(&shard)?,
                    None => shard,
                };
                each(b, &self.members[b], &full)?;
            }
            Ok(())
        })
    }
}
