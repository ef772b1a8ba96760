//! The data-parallel side of training: which rank this process is, its
//! share of a step's prompts or conversations, and the collectives a step
//! calls by name (global counts, the gradient all-reduce, the metrics). A
//! process not launched as a rank is a world of one, where each of these is
//! the identity and the run is exactly a single-process run.
//!
//! Every rank holds the whole trainer state (weights, optimizer, data
//! cursors, schedule); it changes only through the same optimizer step on
//! all-reduced gradients, so it stays identical on every rank without being
//! sent anywhere. See docs/distributed.md.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lmmhost_distributed::{
    BackendChoice, DistOptions, Distributed, GradBuckets, LaunchEnv, ReduceOp,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{Device, Tensor};

use super::experiment::{DistributedSection, Experiment};
use super::optim::GradAccumulator;

pub struct DataParallel {
    dist: Distributed,
    /// Bytes per gradient all-reduce bucket (`distributed.bucket_mb`).
    bucket_bytes: usize,
    /// `distributed.overlap_backward`.
    overlap_backward: bool,
    /// torchrun's restart count: this attempt's keys in the store.
    attempt: u32,
    /// Metric exchanges so far (each gets its own store keys).
    exchanges: Cell<u64>,
}

impl DataParallel {
    /// A world of one on `device`.
    pub fn single(device: Device) -> DataParallel {
        let defaults = DistributedSection::default();
        DataParallel {
            dist: Distributed::single(device),
            bucket_bytes: bucket_bytes(defaults.bucket_mb),
            overlap_backward: defaults.overlap_backward,
            attempt: 0,
            exchanges: Cell::new(0),
        }
    }

    /// Joins the world the launch variables (torchrun's or Slurm's) describe:
    /// Gloo between CPU processes when `model.device` is the CPU, NCCL on
    /// cuda:LOCAL_RANK when it is CUDA. `None` when this process was not
    /// launched as a rank.
    pub fn join(exp: &Experiment) -> Result<Option<DataParallel>> {
        let Some(env) = LaunchEnv::from_env()? else {
            return Ok(None);
        };
        let device =
            lmmhost_model::device::parse_device(&exp.model.device).context("model.device")?;
        let options = DistOptions {
            backend: if device.is_cuda() {
                BackendChoice::Nccl
            } else {
                BackendChoice::Gloo
            },
            // Far beyond any run; `Duration` cannot hold every float.
            timeout: Duration::from_secs_f64(exp.distributed.timeout_secs.min(1e9)),
            group_of_one: exp.distributed.group_of_one,
        };
        let dist = Distributed::join(&env, &options).with_context(|| {
            format!(
                "rank {} of {} joining the run (distributed.timeout_secs = {})",
                env.rank, env.world_size, exp.distributed.timeout_secs
            )
        })?;
        Ok(Some(DataParallel {
            dist,
            bucket_bytes: bucket_bytes(exp.distributed.bucket_mb),
            overlap_backward: exp.distributed.overlap_backward,
            attempt: env.attempt,
            exchanges: Cell::new(0),
        }))
    }

    pub fn rank(&self) -> usize {
        self.dist.rank()
    }

    pub fn world_size(&self) -> usize {
        self.dist.world_size()
    }

    /// Whether the step's collectives run (several ranks, or
    /// `distributed.group_of_one`); without a group they are the identity.
    pub fn has_group(&self) -> bool {
        self.dist.has_group()
    }

    /// Rank 0: the one that prints progress and writes the run's files.
    pub fn is_main(&self) -> bool {
        self.dist.is_main()
    }

    /// The rank's handle, for the collectives of ZeRO's sharded state.
    pub fn dist(&self) -> &Distributed {
        &self.dist
    }

    /// Bytes per gradient all-reduce bucket.
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    /// Whether the all-reduce may start during the last backward pass.
    pub fn overlap_backward(&self) -> bool {
        self.overlap_backward && self.has_group()
    }

    /// This rank's device (cuda:LOCAL_RANK under NCCL).
    pub fn device(&self) -> Device {
        self.dist.device()
    }

    /// This rank's share of `n` items (a step's prompts, each a whole group,
    /// or its conversations): a contiguous range, the shares in rank order
    /// covering `0..n`.
    pub fn share(&self, n: usize) -> Range<usize> {
        let (r, w) = (self.rank(), self.world_size());
        r * n / w..(r + 1) * n / w
    }

    /// Refuses a step with fewer prompts or conversations than ranks, on
    /// every rank at once.
    pub fn check_stage(&self, items: usize) -> Result<()> {
        let w = self.world_size();
        if w > 1 && items < w {
            bail!(
                "the step has {items} prompts or conversations for {w} ranks: each rank needs at least one (raise rollout.prompts_per_step or sft.batch_size, or use fewer ranks)"
            );
        }
        Ok(())
    }

    /// The sums over ranks of `values` (in a world of one, `values`).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.dist.all_reduce_scalars(values, ReduceOp::Sum)
    }

    /// The largest of each value over ranks.
    pub fn max(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.dist.all_reduce_scalars(values, ReduceOp::Max)
    }

    /// The payload of this rank's collectives so far, in bytes.
    pub fn bytes(&self) -> u64 {
        self.dist.bytes()
    }

    pub fn barrier(&self) -> Result<()> {
        self.dist.barrier()
    }

    /// Copies rank 0's values of `tensors` (the weights) to every rank.
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<()> {
        if !self.has_group() {
            return Ok(());
        }
        tch::no_grad(|| {
            tensors
                .iter()
                .try_for_each(|t| self.dist.broadcast(t, 0))
                .context("broadcasting rank 0's weights")
        })
    }

    /// Sums the accumulated gradients over ranks, in place, in buckets. A
    /// parameter that got a gradient on some ranks only gets zeros on the
    /// others first; one that got none anywhere stays without (as on one
    /// rank, the optimizer leaves it alone). The losses were divided by the
    /// global token or sequence counts, so the sum is the gradient one
    /// process would have computed on the whole batch.
    pub fn all_reduce_grads(&self, acc: &mut GradAccumulator, params: &[Tensor]) -> Result<()> {
        if !self.has_group() {
            return Ok(());
        }
        let all: Vec<usize> = (0..acc.grads().len()).collect();
        let anywhere = self.grads_anywhere(acc, &all)?;
        let missing: Vec<usize> = all
            .into_iter()
            .filter(|&i| anywhere[i] && !acc.grads()[i].defined())
            .collect();
        acc.zero_fill(params, &missing);
        self.all_reduce_held_grads(acc)
    }

    /// Per parameter at `which`: whether some rank's micro-batches gave it a
    /// gradient.
    pub fn grads_anywhere(&self, acc: &GradAccumulator, which: &[usize]) -> Result<Vec<bool>> {
        let here: Vec<bool> = which.iter().map(|&i| acc.grads()[i].defined()).collect();
        self.any_rank(&here)
    }

    /// Per flag: whether it is set on some rank.
    pub fn any_rank(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let here: Vec<f64> = flags.iter().map(|&f| f64::from(u8::from(f))).collect();
        Ok(self.max(&here)?.iter().map(|&a| a > 0.0).collect())
    }

    /// Sums every gradient `acc` holds over ranks, in place, in buckets;
    /// every rank must hold gradients for the same parameters.
    pub fn all_reduce_held_grads(&self, acc: &GradAccumulator) -> Result<()> {
        if !self.has_group() {
            return Ok(());
        }
        let grads: Vec<Tensor> = acc
            .grads()
            .iter()
            .filter(|g| g.defined())
            .map(Tensor::shallow_clone)
            .collect();
        GradBuckets::new(&grads, self.bucket_bytes)
            .all_reduce(&self.dist, &grads, ReduceOp::Sum)
            .context("all-reducing the gradients")
    }

    /// Every rank's `values`, in rank order, on every rank (through the
    /// rendezvous store, whose keys are deleted once read: a step's metrics
    /// are a few hundred bytes).
    pub fn gather_metrics(
        &self,
        values: BTreeMap<String, f64>,
    ) -> Result<Vec<BTreeMap<String, f64>>> {
        self.gather("metrics", values)
    }

    /// Every rank's `value`, in rank order, on every rank, through the store
    /// (keep it small).
    pub fn gather<T: Serialize + DeserializeOwned>(&self, what: &str, value: T) -> Result<Vec<T>> {
        if !self.has_group() {
            return Ok(vec![value]);
        }
        let n = self.exchanges.get();
        self.exchanges.set(n + 1);
        let name = format!("lmmhost/{}/{what}/{n}", self.attempt);
        let bytes = encode(&value).with_context(|| format!("encoding this rank's {what}"))?;
        self.dist
            .exchange(&name, &bytes)
            .with_context(|| format!("exchanging the ranks' {what}"))?
            .iter()
            .enumerate()
            .map(|(rank, bytes)| decode(bytes).with_context(|| format!("rank {rank}'s {what}")))
            .collect()
    }
}

fn bucket_bytes(mib: f64) -> usize {
    (mib * (1 << 20) as f64).round().max(1.0) as usize
}

/// A value as the ranks exchange it: binary (postcard), so that floats cross
/// bit for bit, NaN and infinities included (JSON has no such numbers).
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's metrics cross between ranks exactly, whatever their values
    /// (JSON turned NaN into null, which no rank could read back).
    #[test]
    fn exchanged_values_keep_every_float() {
        let values: BTreeMap<String, f64> = [
            ("loss", f64::NAN),
            ("grad_norm", f64::INFINITY),
            ("kl", f64::NEG_INFINITY),
            ("reward/mean", -0.0),
            ("lr", 3e-7),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        let back: BTreeMap<String, f64> = decode(&encode(&values).unwrap()).unwrap();
        assert_eq!(back.len(), values.len());
        for (k, v) in &values {
            assert_eq!(back[k].to_bits(), v.to_bits(), "{k}");
        }
    }
}
