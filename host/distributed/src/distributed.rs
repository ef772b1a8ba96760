//! The handle a trainer holds: who this rank is, which device it computes
//! on, and the process group, or nothing at all in a single-process world
//! where every collective is the identity.

use std::time::Duration;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::launch_env::LaunchEnv;
use crate::process_group::{nccl_build, Backend, ProcessGroup, ReduceOp, Work};
use crate::rendezvous::rendezvous;
use crate::store::Store;

/// Which backend (and so which device) the ranks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// NCCL on cuda:LOCAL_RANK where CUDA is available, else Gloo on CPU.
    Auto,
    Gloo,
    Nccl,
}

#[derive(Clone, Debug)]
pub struct DistOptions {
    pub backend: BackendChoice,
    /// How long joining and each collective may take before the rank fails.
    pub timeout: Duration,
    /// Build the process group even for a world of one, so that its backend
    /// and every collective run: the check of NCCL on a one-GPU machine.
    pub group_of_one: bool,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            backend: BackendChoice::Auto,
            // torch.distributed's default for Gloo; NCCL uses 10 min there.
            timeout: Duration::from_secs(30 * 60),
            group_of_one: false,
        }
    }
}

pub struct Distributed {
    rank: usize,
    world_size: usize,
    local_rank: usize,
    device: Device,
    // Declared before the store: the group must go before the store it uses.
    group: Option<ProcessGroup>,
    store: Option<Store>,
}

impl Distributed {
    /// A world of one process on `device`: collectives return at once.
    pub fn single(device: Device) -> Distributed {
        Distributed {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            device,
            group: None,
            store: None,
        }
    }

    /// From torchrun's (or Slurm's) variables; a single-process world on
    /// `Device::cuda_if_available()` when the process was not launched as a rank.
    pub fn from_env(options: &DistOptions) -> Result<Distributed> {
        match LaunchEnv::from_env()? {
            Some(env) => Distributed::join(&env, options),
            None => Ok(Distributed::single(Device::cuda_if_available())),
        }
    }

    /// Joins the world `env` describes. WORLD_SIZE=1 needs no group unless
    /// `options.group_of_one` asks for one.
    pub fn join(env: &LaunchEnv, options: &DistOptions) -> Result<Distributed> {
        if env.world_size == 1 && !options.group_of_one {
            // No group, so no backend to require: only the device.
            let device = match options.backend {
                BackendChoice::Gloo => Device::Cpu,
                BackendChoice::Auto if !tch::Cuda::is_available() => Device::Cpu,
                BackendChoice::Auto | BackendChoice::Nccl => cuda_device(env.local_rank)?,
            };
            let mut single = Distributed::single(device);
            single.local_rank = env.local_rank;
            return Ok(single);
        }
        let (backend, device) = choose(options.backend, env.local_rank)?;
        let store = rendezvous(env, options.timeout)?;
        let group = ProcessGroup::new(
            &store,
            // A torchrun restart gets keys of its own in the agent's store.
            &format!("world-{}", env.attempt),
            backend,
            device,
            env.rank,
            env.world_size,
            options.timeout,
        )?;
        Ok(Distributed {
            rank: env.rank,
            world_size: env.world_size,
            local_rank: env.local_rank,
            device,
            group: Some(group),
            store: Some(store),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Whether collectives go through a process group (several ranks, or a
    /// group of one built on request); without one they are the identity.
    pub fn has_group(&self) -> bool {
        self.group.is_some()
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Where this rank's model and tensors live.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Rank 0: the one that logs and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The process group; `None` in a single-process world.
    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// The rendezvous store (small shared values, e.g. a run id); `None` in a
    /// single-process world.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce(tensor, op),
            None => Ok(()),
        }
    }

    /// Starts an all-reduce; `None` when there is nothing to wait for.
    pub fn all_reduce_async(&self, tensor: &Tensor, op: ReduceOp) -> Result<Option<Work>> {
        match &self.group {
            Some(g) => g.all_reduce_async(tensor, op).map(Some),
            None => Ok(None),
        }
    }

    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        match &self.group {
            Some(g) => g.broadcast(tensor, root),
            None if root == 0 => Ok(()),
            None => bail!("broadcast from rank {root} in a single-process world"),
        }
    }

    /// Every rank's `input`, flat, in rank order (in a world of one, a flat
    /// view of `input` itself).
    pub fn all_gather(&self, input: &Tensor) -> Result<Tensor> {
        match &self.group {
            Some(g) => g.all_gather(input),
            None => Ok(input.reshape([-1])),
        }
    }

    /// This rank's chunk of the reduction of `input` (in a world of one, a
    /// flat view of `input` itself).
    pub fn reduce_scatter(&self, input: &Tensor, op: ReduceOp) -> Result<Tensor> {
        match &self.group {
            Some(g) => g.reduce_scatter(input, op),
            None => Ok(input.reshape([-1])),
        }
    }

    pub fn barrier(&self) -> Result<()> {
        match &self.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }

    /// The payload of this rank's collectives so far, in bytes
    /// ([`ProcessGroup::bytes`]); 0 in a world of one.
    pub fn bytes(&self) -> u64 {
        self.group.as_ref().map_or(0, ProcessGroup::bytes)
    }

    /// Reduces a few numbers (metrics) across ranks, in f64.
    pub fn all_reduce_scalars(&self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        if self.group.is_none() {
            return Ok(values.to_vec());
        }
        let t = Tensor::from_slice(values)
            .to_kind(Kind::Double)
            .to_device(self.device);
        self.all_reduce(&t, op)?;
        Ok(Vec::<f64>::try_from(&t.to_device(Device::Cpu))?)
    }
}

/// The backend and this rank's device.
fn choose(choice: BackendChoice, local_rank: usize) -> Result<(Backend, Device)> {
    let want_nccl = match choice {
        BackendChoice::Gloo => false,
        BackendChoice::Nccl => true,
        BackendChoice::Auto => tch::Cuda::is_available(),
    };
    if !want_nccl {
        return Ok((Backend::Gloo, Device::Cpu));
    }
    let (has_nccl, why) = nccl_build();
    if !has_nccl {
        bail!(
            "the nccl backend is needed for CUDA but this build has none ({why}); rebuild with the CUDA \
             and NCCL headers, or choose the gloo backend to train on CPU"
        );
    }
    Ok((Backend::Nccl, cuda_device(local_rank)?))
}

/// cuda:LOCAL_RANK, if this process sees that GPU.
fn cuda_device(local_rank: usize) -> Result<Device> {
    if !tch::Cuda::is_available() {
        bail!("CUDA was asked for (the nccl backend) but no CUDA device is available");
    }
    let count = tch::Cuda::device_count() as usize;
    if local_rank >= count {
        bail!("LOCAL_RANK={local_rank} but only {count} CUDA devices are visible to this process");
    }
    Ok(Device::Cuda(local_rank))
}
