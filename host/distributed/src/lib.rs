//! Data parallelism on PyTorch's own distributed engine, c10d: Gloo between
//! CPU processes, NCCL between GPUs, rendezvous through the variables
//! torchrun and Slurm set. The collectives are c10d's, reached through a
//! small C++ shim (`csrc/`) compiled against the headers of the libtorch that
//! tch links; see docs/distributed.md.
//!
//! - [`Distributed`]: rank, world size, device and group (or a no-op world of one).
//! - [`ProcessGroup`], [`Store`]: the c10d objects themselves.
//! - [`Distributed::exchange`]: small values of every rank through the store.
//! - [`GradBuckets`]: gradient all-reduce in flat buckets; [`OverlappedAllReduce`]
//!   with [`GradHooks`] starts each bucket while the backward pass still runs.
//! - [`ShardPlan`]: ZeRO-1/2 partitioning of parameters into per-rank flat shards.
//! - [`launch::LocalLaunch`]: start N local ranks of a program, torchrun-style.

mod buckets;
mod distributed;
mod exchange;
mod ffi;
mod grad_hooks;
pub mod launch;
mod launch_env;
mod overlap;
mod process_group;
mod rendezvous;
mod shard;
mod store;

pub use buckets::{materialize_grads, GradBuckets};
pub use distributed::{BackendChoice, DistOptions, Distributed};
pub use grad_hooks::{GradHooks, InBackward};
pub use launch_env::{first_slurm_host, LaunchEnv, DEFAULT_MASTER_PORT};
pub use overlap::{backward_all_reduced, OverlappedAllReduce};
pub use process_group::{nccl_build, Backend, ProcessGroup, ReduceOp, Work};
pub use rendezvous::rendezvous;
pub use shard::ShardPlan;
pub use store::Store;
